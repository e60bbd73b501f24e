import django_autoembed.indexes
import django_autoembed.triggers
import pgvector.django.halfvec
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_autoembed', '0001_initial'),
        ('testapp', '0002_shelves_and_books'),
    ]

    operations = [
        migrations.CreateModel(
            name='Memo',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('body', models.TextField()),
                ('embedding', pgvector.django.halfvec.HalfVectorField(blank=True, dimensions=1536, editable=False, null=True)),
            ],
            options={
                'abstract': False,
                'indexes': [django_autoembed.indexes.HnswIndex(ef_construction=64, fields=['embedding'], m=16, name='testapp_memo_embedding_hnsw', opclasses=['halfvec_cosine_ops'])],
                'constraints': [django_autoembed.triggers.EmbeddingTrigger(clear_on_update=True, column='embedding', function='memo_text', name='autoembed_testapp_memo_embedding', own_function=True)],
            },
        ),
        # Memo's content function, written by hand as in the Supabase guide; it calls a
        # helper of its own schema without qualifying it, so it names its search path.
        migrations.RunSQL(
            """
            create function shout(t text) returns text language sql immutable as $$ select upper(t) || '!' $$;
            create function memo_text(r testapp_memo) returns text language sql stable
                set search_path = public, pg_catalog as $$ select shout(r.body) $$;
            """,
            "drop function memo_text(testapp_memo) cascade; drop function shout(text);",
        ),
        migrations.CreateModel(
            name='RemoteDoc',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('title', models.TextField()),
                ('embedding', pgvector.django.halfvec.HalfVectorField(blank=True, dimensions=1536, editable=False, null=True)),
            ],
            options={
                'abstract': False,
                'indexes': [django_autoembed.indexes.HnswIndex(ef_construction=64, fields=['embedding'], m=16, name='testapp_remotedoc_emb_d4493ddd', opclasses=['halfvec_cosine_ops'])],
                'constraints': [django_autoembed.triggers.EmbeddingTrigger(column='embedding', fields=['title'], function='testapp_remotedoc_embedding_input', name='autoembed_testapp_remotedoc_embedding')],
            },
        ),
    ]
