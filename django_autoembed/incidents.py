"""Failures that repeat: counted in the database, shown by status, said once in the log.

A worker meets some failures on every tick until somebody acts: an index it
cannot defer or build, statements Postgres cancels for a timeout. Logged per
tick, such a failure drowns in the log and nobody counts it. Here each kind
of failure per subject (a config label, a provider) is one row that counts
its occurrences; the first in a process is logged at ERROR with the fix,
the rest at DEBUG; ``autoembed_status`` lists the rows seen lately, and a
success that ends the condition clears its row.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, models, transaction
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)

# An incident not seen again for this long is no longer shown.
SHOWN_FOR = timedelta(minutes=30)


class IncidentKind(models.TextChoices):
    INDEX_DEFER = "index_defer", "an HNSW index could not be deferred"
    INDEX_BUILD = "index_build", "an HNSW index could not be built"
    STATEMENT_TIMEOUT = "statement_timeout", "a statement was cancelled by a timeout"
    BATCH_SUBMIT = "batch_submit", "the Batch API refused a batch"
    BATCH_LIMIT = "batch_limit", "a batch met the account's enqueued-token limit"


class Incident(models.Model):
    """One kind of failure of one subject, counted each time a worker meets it."""

    kind = models.CharField(max_length=32, choices=IncidentKind.choices)
    subject = models.CharField(max_length=255, help_text="a config label or a provider")
    count = models.BigIntegerField(default=0)
    error = models.TextField(help_text="the latest occurrence, with what to do")
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "django_autoembed"
        constraints = [
            models.UniqueConstraint(fields=["kind", "subject"], name="autoembed_incident_unique")
        ]
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.count}x, {self.error[:80]}"


_logged: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


def report(using: str, kind: IncidentKind, subject: str, error: str) -> None:
    """Count one occurrence; log it at ERROR the first time this process sees it."""
    key = (using, str(kind), subject)
    with _lock:
        first = key not in _logged
        _logged.add(key)
    logger.log(
        logging.ERROR if first else logging.DEBUG,
        "%s: %s",
        subject,
        error,
        extra={"incident": str(kind), "subject": subject},
    )
    try:
        with transaction.atomic(using=using):
            updated = Incident.objects.using(using).filter(kind=kind, subject=subject[:255])
            if not updated.update(count=F("count") + 1, error=error, last_seen=timezone.now()):
                Incident.objects.using(using).create(
                    kind=kind, subject=subject[:255], count=1, error=error
                )
    except DatabaseError:  # not migrated, or not granted: the log has said it
        pass


def clear(using: str, kind: IncidentKind, subject: str, *, anyone: bool = False) -> None:
    """The condition is over: its row goes (the log says it again if it comes back).

    Only what this process reported is cleared, unless ``anyone`` (for rare events: a
    frequent one would cost a statement each time)."""
    with _lock:
        seen = (using, str(kind), subject) in _logged
        _logged.discard((using, str(kind), subject))
    if not (seen or anyone):
        return
    try:
        with transaction.atomic(using=using):
            Incident.objects.using(using).filter(kind=kind, subject=subject[:255]).delete()
    except DatabaseError:
        pass


def recent(using: str) -> list[dict[str, Any]]:
    """Incidents seen lately, for status: kind, subject, count, error, first and last seen."""
    try:
        with transaction.atomic(using=using):
            rows = list(
                Incident.objects.using(using).filter(last_seen__gte=timezone.now() - SHOWN_FOR)
            )
    except DatabaseError:
        return []
    return [
        {
            "kind": row.kind,
            "subject": row.subject,
            "count": row.count,
            "error": row.error,
            "first_seen": row.first_seen.isoformat(),
            "last_seen": row.last_seen.isoformat(),
        }
        for row in rows
    ]
