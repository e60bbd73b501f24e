from django.db import migrations

from django_autoembed import sql
from django_autoembed.push import enable_extensions


class Migration(migrations.Migration):
    dependencies = [("django_autoembed", "0001_initial")]

    operations = [
        migrations.RunPython(enable_extensions, migrations.RunPython.noop),
        migrations.RunSQL(
            sql.load("migrations/0002_push.sql"),
            "drop function if exists autoembed.process_embeddings(int, int, int);"
            "drop function if exists autoembed.invoke_endpoint(jsonb, int);",
        ),
    ]
