"""Dead letters: rows whose embedding failed MAX_ATTEMPTS times."""

from __future__ import annotations

from django.db import models


class EmbeddingFailure(models.Model):
    """One row whose embedding gave up after ``MAX_ATTEMPTS``; its job is archived in pgmq."""

    config = models.CharField(max_length=255, db_index=True, help_text="app_label.Model.config")
    table = models.CharField(max_length=255)
    object_pk = models.TextField()
    job = models.JSONField(help_text="The queue message to send again on retry.")
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    first_failed_at = models.DateTimeField(auto_now_add=True)
    last_failed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["config", "object_pk"], name="autoembed_failure_unique_row")
        ]
        ordering = ["-last_failed_at"]

    def __str__(self) -> str:
        return f"{self.config} pk={self.object_pk}: {self.error[:80]}"
