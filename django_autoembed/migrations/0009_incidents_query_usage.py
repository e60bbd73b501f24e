from django.db import migrations, models

from django_autoembed import sql

BACKWARD = (
    "alter function autoembed.queue_inserted() security invoker;\n"
    "alter function autoembed.queue_updated() security invoker;\n"
    "grant execute on function autoembed.queue_ids(jsonb[], text, text, text, text) to public;\n"
    + sql.section("migrations/0006_push_v2.sql", "settle_requests")
)


class Migration(migrations.Migration):
    dependencies = [("django_autoembed", "0008_usage_budgets_batches")]

    operations = [
        migrations.AlterField(
            model_name="embeddingusage",
            name="mode",
            field=models.CharField(
                choices=[
                    ("api", "embeddings API"),
                    ("batch", "Batch API"),
                    ("query", "search queries"),
                ],
                default="api",
                max_length=16,
            ),
        ),
        migrations.CreateModel(
            name="Incident",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("index_defer", "an HNSW index could not be deferred"),
                            ("index_build", "an HNSW index could not be built"),
                            ("statement_timeout", "a statement was cancelled by a timeout"),
                        ],
                        max_length=32,
                    ),
                ),
                (
                    "subject",
                    models.CharField(help_text="a config label or a provider", max_length=255),
                ),
                ("count", models.BigIntegerField(default=0)),
                ("error", models.TextField(help_text="the latest occurrence, with what to do")),
                ("first_seen", models.DateTimeField(auto_now_add=True)),
                ("last_seen", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["-last_seen"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("kind", "subject"), name="autoembed_incident_unique"
                    )
                ],
            },
        ),
        migrations.RunSQL(sql.load("migrations/0009_incidents.sql"), BACKWARD),
    ]
