from django.db import migrations, models

from django_autoembed import sql

# Back to 0004's five-argument queue_ids (its create statement alone, not the grants
# after it), then the six-argument one goes.
BACKWARD = (
    sql.section("migrations/0004_least_privilege.sql", "queue_ids").split("$$;")[0]
    + "$$;\ndrop function if exists "
    "autoembed.queue_ids(jsonb[], text, text, text, text, text);"
)


class Migration(migrations.Migration):
    dependencies = [
        ("django_autoembed", "0010_stable_cron_function"),
    ]

    operations = [
        migrations.RunSQL(sql.load("migrations/0011_backfill_origin.sql"), BACKWARD),
        migrations.AddField(
            model_name="providerbatch",
            name="enqueued",
            field=models.BigIntegerField(
                default=0, help_text="tokens it holds against the account's enqueued-token limit"
            ),
        ),
        migrations.AddField(
            model_name="providerbatch",
            name="queue_limit",
            field=models.BigIntegerField(
                blank=True,
                help_text="the enqueued-token limit the provider refused it for",
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="incident",
            name="kind",
            field=models.CharField(
                choices=[
                    ("index_defer", "an HNSW index could not be deferred"),
                    ("index_build", "an HNSW index could not be built"),
                    ("statement_timeout", "a statement was cancelled by a timeout"),
                    ("batch_submit", "the Batch API refused a batch"),
                    ("batch_limit", "a batch met the account's enqueued-token limit"),
                ],
                max_length=32,
            ),
        ),
        migrations.AlterField(
            model_name="providerbatch",
            name="tokens",
            field=models.BigIntegerField(default=0, help_text="tokens billed"),
        ),
        migrations.AddIndex(
            model_name="providerbatch",
            index=models.Index(
                condition=models.Q(("state", "done"), _negated=True),
                fields=["model"],
                name="autoembed_batch_in_flight",
            ),
        ),
        migrations.AddIndex(
            model_name="providerbatch",
            index=models.Index(
                condition=models.Q(("queue_limit__isnull", False)),
                fields=["model", "finished"],
                name="autoembed_batch_refusals",
            ),
        ),
    ]
