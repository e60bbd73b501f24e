from django.db import migrations

from django_autoembed import sql


class Migration(migrations.Migration):
    dependencies = [("django_autoembed", "0006_push_v2")]

    operations = [
        migrations.RunSQL(
            sql.load("migrations/0007_chunk_deletes.sql"),
            "drop function if exists autoembed.delete_chunks();",
        )
    ]
