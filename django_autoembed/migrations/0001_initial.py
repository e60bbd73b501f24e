from django.db import migrations, models
from pgvector.django import VectorExtension

from django_autoembed import sql
from django_autoembed.install import drop_pgmq, install_pgmq


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        VectorExtension(),
        migrations.RunPython(install_pgmq, drop_pgmq),
        migrations.RunSQL(
            sql.load("migrations/0001_schema.sql"), "drop schema if exists autoembed cascade"
        ),
        migrations.RunSQL(sql.load("migrations/0001_functions.sql"), migrations.RunSQL.noop),
        migrations.CreateModel(
            name="EmbeddingFailure",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "config",
                    models.CharField(
                        db_index=True, help_text="app_label.Model.config", max_length=255
                    ),
                ),
                ("table", models.CharField(max_length=255)),
                ("object_pk", models.TextField()),
                ("job", models.JSONField(help_text="The queue message to send again on retry.")),
                ("error", models.TextField()),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("first_failed_at", models.DateTimeField(auto_now_add=True)),
                ("last_failed_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["-last_failed_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("config", "object_pk"), name="autoembed_failure_unique_row"
                    )
                ],
            },
        ),
    ]
