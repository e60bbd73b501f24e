"""What Postgres keeps of each Batch API job, so that every worker sees the batches in
flight, their tokens against the account's enqueued limit, and what came of them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import DatabaseError, models
from django.db.models import Q, Sum

# The provider's states a batch ends in.
TERMINAL = ("completed", "expired", "failed", "cancelled")
# Jobs of a batch stay hidden this long at most (the provider's 24-hour window, and then some).
HOLD_SECONDS = 26 * 3600
# A batch that never got past "preparing" (the worker died while submitting) is looked for
# at the provider after this long, and given up on (its jobs back in the queue) if not found.
PREPARING_TIMEOUT = timedelta(minutes=10)
KEY_BYTES = 16
# How long a worker may take to look at (and finish) one batch before another may.
LEASE = timedelta(minutes=10)


class BatchState(models.TextChoices):
    """Where our record of a batch stands (the provider's own status is kept beside it)."""

    PREPARING = "preparing", "preparing"  # recorded, being uploaded and created
    SUBMITTED = "submitted", "submitted"  # the provider has it
    DONE = "done", "done"  # collected, or given up on


PREPARING, SUBMITTED, DONE = BatchState.PREPARING, BatchState.SUBMITTED, BatchState.DONE


class ProviderBatch(models.Model):
    """One Batch API job: what it holds, where it stands, what came of it."""

    config = models.CharField(max_length=255, help_text="app_label.Model.config")
    provider = models.CharField(max_length=255, help_text="name, model and server; no secrets")
    model = models.CharField(max_length=255)
    batch_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    state = models.CharField(max_length=16, choices=BatchState.choices, default=PREPARING)
    status = models.CharField(max_length=32, blank=True, default="", help_text="the provider's")
    messages = models.JSONField(default=list, help_text="queue message ids held for it")
    keys = models.BinaryField(help_text="16-byte hashes of its texts, in order")
    lines = models.JSONField(default=list, help_text="inputs per request line")
    inputs = models.PositiveIntegerField(default=0)
    enqueued = models.BigIntegerField(
        default=0, help_text="tokens it holds against the account's enqueued-token limit"
    )
    vectors = models.PositiveIntegerField(default=0, help_text="vectors it brought")
    failed = models.PositiveIntegerField(default=0, help_text="inputs it did not embed")
    tokens = models.BigIntegerField(default=0, help_text="tokens billed")
    queue_limit = models.BigIntegerField(
        null=True, blank=True, help_text="the enqueued-token limit the provider refused it for"
    )
    failed_keys = models.BinaryField(
        default=b"", help_text="hashes of the texts it did not embed (the API's to do)"
    )
    error = models.TextField(blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(
        null=True, blank=True, help_text="a worker is looking at it until then"
    )

    class Meta:
        app_label = "django_autoembed"
        ordering = ["-created"]
        verbose_name = "provider batch"
        # Both small whatever the number of batches done: the batches in flight, and the
        # refusals that taught us an account's enqueued-token limit.
        indexes = [
            models.Index(
                fields=["model"], name="autoembed_batch_in_flight", condition=~Q(state="done")
            ),
            models.Index(
                fields=["model", "finished"],
                name="autoembed_batch_refusals",
                condition=Q(queue_limit__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.config}: batch {self.batch_id or '(submitting)'} {self.status or self.state}"

    def key_list(self) -> list[bytes]:
        keys = bytes(self.keys)
        return [keys[n : n + KEY_BYTES] for n in range(0, len(keys), KEY_BYTES)]


def in_flight(using: str) -> list[ProviderBatch]:
    """The batches not done with (the partial index keeps this cheap however many finished)."""
    return list(ProviderBatch.objects.using(using).exclude(state=DONE).order_by("created"))


def enqueued_tokens(using: str, model: str) -> int:
    """Tokens of ``model`` the account holds in batches now (ours, as we counted them)."""
    found = (
        ProviderBatch.objects.using(using)
        .exclude(state=DONE)
        .filter(model=model)
        .aggregate(n=Sum("enqueued"))["n"]
    )
    return int(found or 0)


def learned_limit(using: str, model: str, since: Any) -> int | None:
    """The lowest enqueued-token limit the provider stated for ``model`` since then."""
    found = (
        ProviderBatch.objects.using(using)
        .filter(model=model, queue_limit__isnull=False, finished__gte=since)
        .aggregate(n=models.Min("queue_limit"))["n"]
    )
    return None if found is None else int(found)


def status_rows(using: str) -> list[dict[str, Any]]:
    """The batches in flight, for ``autoembed_status``."""
    try:
        return [
            {
                "config": r.config,
                "model": r.model,
                "batch_id": r.batch_id,
                "status": r.status or r.state,
                "inputs": r.inputs,
                "tokens": r.enqueued,
                "jobs": len(r.messages),
                "submitted": r.created.isoformat(),
            }
            for r in in_flight(using)
        ]
    except DatabaseError:
        return []
