import django.db.models.deletion
import django_autoembed.indexes
import django_autoembed.triggers
import pgvector.django.halfvec
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_autoembed', '0001_initial'),
        ('testapp', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='Shelf',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.TextField()),
            ],
        ),
        migrations.CreateModel(
            name='Book',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('title', models.TextField()),
                ('embedding', pgvector.django.halfvec.HalfVectorField(blank=True, dimensions=1536, editable=False, null=True)),
                ('shelf', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='books', to='testapp.shelf')),
            ],
            options={
                'abstract': False,
                'indexes': [django_autoembed.indexes.HnswIndex(ef_construction=64, fields=['embedding'], m=16, name='testapp_book_embedding_hnsw', opclasses=['halfvec_cosine_ops'])],
                'constraints': [django_autoembed.triggers.EmbeddingTrigger(column='embedding', fields=['title'], function='testapp_book_embedding_input', name='autoembed_testapp_book_embedding')],
            },
        ),
    ]
