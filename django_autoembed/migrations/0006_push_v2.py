from django.db import migrations

from django_autoembed import sql

BACKWARD = """
drop function if exists autoembed.process_embeddings_v2(int, int, int, int, boolean, interval);
drop function if exists autoembed.settle_requests(interval);
drop table if exists autoembed.push_requests;
"""


class Migration(migrations.Migration):
    dependencies = [("django_autoembed", "0005_index_state")]

    operations = [migrations.RunSQL(sql.load("migrations/0006_push_v2.sql"), BACKWARD)]
