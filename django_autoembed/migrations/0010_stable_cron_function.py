from django.db import migrations

from django_autoembed import sql

BACKWARD = (
    sql.section("migrations/0006_push_v2.sql", "process_embeddings_v2")
    + ";\ndrop function if exists "
    + "autoembed.process_embeddings(int, int, int, int, boolean, interval);"
)


class Migration(migrations.Migration):
    dependencies = [("django_autoembed", "0009_incidents_query_usage")]

    operations = [
        migrations.RunSQL(sql.load("migrations/0010_stable_cron_function.sql"), BACKWARD),
    ]
