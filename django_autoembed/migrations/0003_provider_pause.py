from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_autoembed", "0002_push"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProviderPause",
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
                ("error", models.TextField()),
                ("since", models.DateTimeField(auto_now_add=True)),
                ("last_seen", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["provider"],
            },
        ),
    ]
