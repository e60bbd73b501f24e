from django.db import models

from django_autoembed import EmbeddingMixin


class Document(EmbeddingMixin, models.Model):
    title = models.TextField()
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    embed_fields = ["title", "content"]

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title
