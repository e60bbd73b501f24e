"""Tables the benchmarks fill: the same rows at 1536 and 384 dimensions, with and without HNSW."""

from django.db import models

from django_autoembed import EmbeddingConfig, EmbeddingMixin


class Doc(EmbeddingMixin, models.Model):
    """1536 dims, no index: the shape pgai's published runs used (indexing_none)."""

    title = models.TextField()
    content = models.TextField()
    embedding_configs = [EmbeddingConfig(fields=["title", "content"], dimensions=1536, index=False)]


class Doc384(EmbeddingMixin, models.Model):
    title = models.TextField()
    content = models.TextField()
    embedding_configs = [EmbeddingConfig(fields=["title", "content"], dimensions=384, index=False)]


class IndexedDoc(EmbeddingMixin, models.Model):
    """What ``embed_fields`` gives a user: 1536 dims with the HNSW cosine index."""

    title = models.TextField()
    content = models.TextField()
    embed_fields = ["title", "content"]


class IndexedNote(EmbeddingMixin, models.Model):
    """The same, under a label whose old advisory-lock key (a CRC of 2**31 or more) failed."""

    title = models.TextField()
    content = models.TextField()
    embed_fields = ["title", "content"]


class SearchDoc(EmbeddingMixin, models.Model):
    """100,000 rows for the search bench; the index is built after the bulk load."""

    category = models.IntegerField()
    content = models.TextField()
    embedding_configs = [EmbeddingConfig(fields=["content"], dimensions=384, index=False)]


class PlainDoc(models.Model):
    """Same columns, no embedding: the insert baseline, and the table pgai vectorizes."""

    title = models.TextField()
    content = models.TextField()


class LongDoc(EmbeddingMixin, models.Model):
    """Documents of 3,000-20,000 tokens, one vector per chunk of at most 512 tokens."""

    title = models.TextField()
    content = models.TextField()
    embedding_configs = [
        EmbeddingConfig(fields=["title", "content"], chunk_tokens=512, chunk_overlap=64)
    ]


class SearchManual(EmbeddingMixin, models.Model):
    """10,000 rows of 10 chunks each for the search-over-chunks bench (384 dims)."""

    content = models.TextField()
    embedding_configs = [EmbeddingConfig(fields=["content"], dimensions=384, chunk_tokens=256)]


class HybridDoc(EmbeddingMixin, models.Model):
    """100,000 rows of prose for the hybrid search bench, with the full-text index."""

    category = models.IntegerField()
    content = models.TextField()
    embedding_configs = [
        EmbeddingConfig(fields=["content"], dimensions=384, index=False, text_search="english")
    ]
