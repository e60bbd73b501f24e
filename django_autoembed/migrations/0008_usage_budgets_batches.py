from django.db import migrations, models

from django_autoembed import sql


class Migration(migrations.Migration):
    dependencies = [
        ("django_autoembed", "0007_chunk_deletes"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProviderBatch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("config", models.CharField(help_text="app_label.Model.config", max_length=255)),
                (
                    "provider",
                    models.CharField(
                        help_text="name, model and server; no secrets", max_length=255
                    ),
                ),
                ("model", models.CharField(max_length=255)),
                (
                    "batch_id",
                    models.CharField(blank=True, db_index=True, default="", max_length=255),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("preparing", "preparing"),
                            ("submitted", "submitted"),
                            ("done", "done"),
                        ],
                        default="preparing",
                        max_length=16,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        blank=True, default="", help_text="the provider's", max_length=32
                    ),
                ),
                (
                    "messages",
                    models.JSONField(default=list, help_text="queue message ids held for it"),
                ),
                ("keys", models.BinaryField(help_text="16-byte hashes of its texts, in order")),
                ("lines", models.JSONField(default=list, help_text="inputs per request line")),
                ("inputs", models.PositiveIntegerField(default=0)),
                ("vectors", models.PositiveIntegerField(default=0, help_text="vectors it brought")),
                (
                    "failed",
                    models.PositiveIntegerField(default=0, help_text="inputs it did not embed"),
                ),
                ("tokens", models.BigIntegerField(default=0)),
                (
                    "failed_keys",
                    models.BinaryField(
                        default=b"",
                        help_text="hashes of the texts it did not embed (the API's to do)",
                    ),
                ),
                ("error", models.TextField(blank=True, default="")),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("finished", models.DateTimeField(blank=True, null=True)),
                (
                    "leased_until",
                    models.DateTimeField(
                        blank=True, help_text="a worker is looking at it until then", null=True
                    ),
                ),
            ],
            options={
                "verbose_name": "provider batch",
                "ordering": ["-created"],
            },
        ),
        migrations.CreateModel(
            name="RateBudget",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "provider",
                    models.CharField(
                        help_text="name, model and server; no secrets", max_length=255, unique=True
                    ),
                ),
                (
                    "tokens",
                    models.FloatField(
                        help_text="available now; below 0: promised to waiting requests"
                    ),
                ),
                ("requests", models.FloatField()),
                (
                    "at",
                    models.FloatField(
                        help_text="the database clock at the last change, epoch seconds"
                    ),
                ),
                ("factor", models.FloatField(default=1.0, help_text="share of the limits in use")),
                (
                    "learned_tpm",
                    models.IntegerField(blank=True, help_text="from x-ratelimit-*", null=True),
                ),
                (
                    "learned_rpm",
                    models.IntegerField(blank=True, help_text="from x-ratelimit-*", null=True),
                ),
                ("throttled", models.BigIntegerField(default=0, help_text="429s seen")),
            ],
        ),
        migrations.CreateModel(
            name="StoredVector",
            fields=[
                ("key", models.BinaryField(max_length=16, primary_key=True, serialize=False)),
                ("vector", models.BinaryField(help_text="float16 or float32, little-endian")),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.CreateModel(
            name="EmbeddingUsage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("config", models.CharField(help_text="app_label.Model.config", max_length=255)),
                ("model", models.CharField(help_text="the provider's model", max_length=255)),
                (
                    "mode",
                    models.CharField(
                        choices=[("api", "embeddings API"), ("batch", "Batch API")],
                        default="api",
                        max_length=16,
                    ),
                ),
                ("requests", models.BigIntegerField(default=0)),
                ("inputs", models.BigIntegerField(default=0)),
                ("tokens", models.BigIntegerField(default=0)),
            ],
            options={
                "verbose_name_plural": "embedding usage",
                "ordering": ["-day", "config"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "config", "model", "mode"), name="autoembed_usage_unique_day"
                    )
                ],
            },
        ),
        migrations.RunSQL(
            sql.load("migrations/0008_vector_store.sql"),
            "drop index if exists django_autoembed_storedvector_created;",
        ),
    ]
