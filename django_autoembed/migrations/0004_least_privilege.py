from django.db import migrations

from django_autoembed import sql

BACKWARD = """
alter function autoembed.queue_name() immutable;
revoke usage on schema autoembed from public;
grant execute on function autoembed.queue_name(), autoembed.queue_inserted(),
    autoembed.queue_updated(), autoembed.clear_column(),
    autoembed.process_embeddings(int, int, int) to public;
"""


class Migration(migrations.Migration):
    dependencies = [("django_autoembed", "0003_provider_pause")]

    operations = [
        migrations.RunSQL(
            sql.load("migrations/0004_least_privilege.sql"),
            BACKWARD + sql.section("migrations/0001_functions.sql", "queue_ids") + ";",
        ),
    ]
