from django.db import models

from django_autoembed import EmbeddingConfig, EmbeddingMixin


class Document(EmbeddingMixin, models.Model):
    title = models.TextField()
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    embedding_configs = [
        EmbeddingConfig(
            fields=["title", "content"],
            # One vector per passage of at most 200 tokens, in the generated DocumentChunk
            # (all-MiniLM-L6-v2 reads 256 tokens at most).
            chunk_tokens=200,
            chunk_overlap=32,
            # 384 whichever provider runs (the local model's size), so the schema is one.
            dimensions=384,
            # A stored tsvector of the fields, with its GIN index, for hybrid_search.
            text_search="english",
        )
    ]

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title
