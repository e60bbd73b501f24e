import uuid

from django.db import models

from django_autoembed import EmbeddingConfig, EmbeddingMixin


class Document(EmbeddingMixin, models.Model):
    title = models.TextField()
    content = models.TextField(blank=True, default="")
    views = models.IntegerField(default=0)

    embed_fields = ["title", "content"]
    embed_text_search = "english"


class Chapter(Document):
    """Multi-table child: the parent's table holds the embedding, no triggers of its own."""

    number = models.IntegerField(default=1)


class DocumentProxy(Document):
    class Meta:
        proxy = True


class Article(EmbeddingMixin, models.Model):
    """Two embeddings on one model, one from a template, one cleared on update."""

    title = models.TextField()
    body = models.TextField(null=True, blank=True)

    embedding_configs = [
        EmbeddingConfig(
            fields=["title"], column="title_embedding", name="title", clear_on_update=True
        ),
        EmbeddingConfig(template="# {title}\n\n{body}", column="body_embedding", name="body"),
    ]


class Note(EmbeddingMixin, models.Model):
    """UUID key and a custom table name that needs quoting."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    body = models.TextField()

    embed_fields = ["body"]

    class Meta:
        db_table = "Notes With Spaces"


class Tag(EmbeddingMixin, models.Model):
    """Text primary key."""

    slug = models.CharField(max_length=100, primary_key=True)
    label = models.TextField()

    embed_fields = ["label"]


class Shelf(models.Model):
    name = models.TextField()


class Book(EmbeddingMixin, models.Model):
    """A declared model behind a foreign key, for searches inside prefetch_related."""

    shelf = models.ForeignKey(Shelf, related_name="books", on_delete=models.CASCADE)
    title = models.TextField()

    embed_fields = ["title"]


class RemoteDoc(EmbeddingMixin, models.Model):
    """Written to the 'other' database (tests/testapp/routers.py)."""

    title = models.TextField()

    embed_fields = ["title"]


class Memo(EmbeddingMixin, models.Model):
    """Its own SQL content function, which calls a helper of its schema unqualified."""

    body = models.TextField()

    embedding_configs = [EmbeddingConfig(content_function="memo_text", clear_on_update=True)]


class Manual(EmbeddingMixin, models.Model):
    """Long texts stored in chunks: one vector per chunk, in the generated ManualChunk."""

    title = models.TextField()
    body = models.TextField(blank=True, default="")

    embedding_configs = [
        EmbeddingConfig(fields=["title", "body"], chunk_tokens=120, chunk_overlap=16)
    ]


class Essay(EmbeddingMixin, models.Model):
    """Texts that must be embedded whole or not at all."""

    body = models.TextField()

    embedding_configs = [EmbeddingConfig(fields=["body"], too_long="fail")]


class Quote(EmbeddingMixin, models.Model):
    """Embedded by another model than the rest: a provider of its own, paused on its own."""

    text = models.TextField()

    embedding_configs = [EmbeddingConfig(fields=["text"], model="text-embedding-3-large")]
