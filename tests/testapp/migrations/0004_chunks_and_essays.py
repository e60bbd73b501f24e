import django.db.models.deletion
import django_autoembed.indexes
import django_autoembed.triggers
import pgvector.django.halfvec
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_autoembed', '0001_initial'),
        ('testapp', '0003_remote_and_memo'),
    ]

    operations = [
        migrations.CreateModel(
            name='Essay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('body', models.TextField()),
                ('embedding', pgvector.django.halfvec.HalfVectorField(blank=True, dimensions=1536, editable=False, null=True)),
            ],
            options={
                'abstract': False,
                'indexes': [django_autoembed.indexes.HnswIndex(ef_construction=64, fields=['embedding'], m=16, name='testapp_essay_embedding_hnsw', opclasses=['halfvec_cosine_ops'])],
                'constraints': [django_autoembed.triggers.EmbeddingTrigger(column='embedding', fields=['body'], function='testapp_essay_embedding_input', name='autoembed_testapp_essay_embedding')],
            },
        ),
        migrations.CreateModel(
            name='Manual',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('title', models.TextField()),
                ('body', models.TextField(blank=True, default='')),
            ],
            options={
                'abstract': False,
                'constraints': [django_autoembed.triggers.EmbeddingTrigger(column='testapp_manual_embedding_chunks.embedding', fields=['title', 'body'], function='testapp_manual_embedding_chunks_input', name='autoembed_testapp_manual_embedding_chunks')],
            },
        ),
        migrations.CreateModel(
            name='ManualChunk',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('text', models.TextField()),
                ('embedding', pgvector.django.halfvec.HalfVectorField(dimensions=1536, editable=False)),
                ('parent', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='embedding_chunks', to='testapp.manual')),
            ],
            options={
                'verbose_name': 'manual chunk',
                'db_table': 'testapp_manual_embedding_chunks',
                'ordering': ['parent', 'number'],
                'indexes': [django_autoembed.indexes.HnswIndex(ef_construction=64, fields=['embedding'], m=16, name='testapp_manual_embedd_0b3a50db', opclasses=['halfvec_cosine_ops'])],
            },
        ),
    ]
