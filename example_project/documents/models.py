from django.db import models

from django_autoembed import EmbeddingConfig, EmbeddingMixin


class Document(EmbeddingMixin, models.Model):
    title = models.TextField()
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    # `embed_fields = ["title", "content"]` would do, with AUTOEMBED["DIMENSIONS"];
    # the full form pins 384 so the schema is the same whichever provider runs, and
    # text_search adds the full-text index the hybrid search uses.
    embedding_configs = [
        EmbeddingConfig(fields=["title", "content"], dimensions=384, text_search="english")
    ]

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title
