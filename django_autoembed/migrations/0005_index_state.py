from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_autoembed", "0004_least_privilege"),
    ]

    operations = [
        migrations.CreateModel(
            name="IndexState",
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
                        help_text="app_label.Model.config", max_length=255, unique=True
                    ),
                ),
                ("index", models.CharField(max_length=63)),
                ("table", models.CharField(max_length=255)),
                (
                    "state",
                    models.CharField(
                        choices=[("deferred", "deferred"), ("building", "building")], max_length=16
                    ),
                ),
                ("since", models.DateTimeField(auto_now_add=True)),
                ("updated", models.DateTimeField(auto_now=True)),
            ],
        ),
    ]
