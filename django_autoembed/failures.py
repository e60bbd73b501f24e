"""Dead letters: rows whose embedding failed MAX_ATTEMPTS times, and what to do with them.

The processor records them (one upsert per batch, inside the batch's own
transaction and database); the admin and ``autoembed_retry`` queue them
again or discard them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, models, transaction
from psycopg import sql

from . import queue
from . import sql as sqlfiles
from .declarations import registry
from .exceptions import UnknownConfig

logger = logging.getLogger(__name__)


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
        app_label = "django_autoembed"
        constraints = [
            models.UniqueConstraint(
                fields=["config", "object_pk"], name="autoembed_failure_unique_row"
            )
        ]
        ordering = ["-last_failed_at"]

    def __str__(self) -> str:
        return f"{self.config} pk={self.object_pk}: {self.error[:80]}"


@dataclass(frozen=True)
class DeadRow:
    """A row given up on: config, key, the job to send again, why, and after how many attempts."""

    config: str
    table: str
    row_id: Any
    job: dict[str, Any]
    error: str
    attempts: int


def record(cursor: Any, dead: list[DeadRow]) -> None:
    """Record rows given up on, with the cursor of the transaction that archives their jobs."""
    if not dead:
        return
    statement = sqlfiles.composed(
        "failures.sql", "record", failures=sql.Identifier(EmbeddingFailure._meta.db_table)
    )
    # One row per key: a batch that gives up on a row twice adds both attempts.
    merged: dict[tuple[str, str], DeadRow] = {}
    for row in dead:
        key = (row.config, str(row.row_id))
        earlier = merged.get(key)
        merged[key] = (
            row
            if earlier is None
            else DeadRow(
                row.config,
                row.table,
                row.row_id,
                row.job,
                row.error,
                earlier.attempts + row.attempts,
            )
        )
    rows = list(merged.values())
    cursor.execute(
        statement.as_string(None),
        [
            [r.config for r in rows],
            [r.table for r in rows],
            [str(r.row_id) for r in rows],
            [json.dumps(r.job) for r in rows],
            [r.error for r in rows],
            [r.attempts for r in rows],
        ],
    )
    for row in rows:
        logger.error(
            "Gave up embedding %s pk=%s after %d attempts: %s",
            row.config,
            row.row_id,
            row.attempts,
            row.error,
            extra={"config": row.config, "pk": str(row.row_id), "attempts": row.attempts},
        )


def forget(cursor: Any, config: str, embedded: Iterable[Any]) -> None:
    """Rows of ``config`` just embedded, in the transaction that wrote them: any failure they
    had is over, so status and the admin list only the rows still failing."""
    keys = [str(pk) for pk in embedded]
    if keys:
        statement = sqlfiles.composed(
            "failures.sql", "forget", failures=sql.Identifier(EmbeddingFailure._meta.db_table)
        )
        cursor.execute(statement.as_string(None), [config, keys])


@dataclass
class RetryResult:
    queued: int = 0
    refused: list[str] = field(default_factory=list)  # why some failures were kept


def retry(failures: models.QuerySet[EmbeddingFailure]) -> RetryResult:
    """Queue each failure's row again (a fresh job, attempts reset) and delete the failure.

    Failures whose config is no longer declared are kept and reported: their job
    would only fail again. Discard those instead.
    """
    result = RetryResult()
    using = failures.db
    bodies, done = [], []
    for failure in failures:
        try:
            config = registry.get(failure.config)
        except UnknownConfig:
            result.refused.append(
                f"{failure.config} pk={failure.object_pk}: no such embedding is declared; "
                "discard it instead"
            )
            continue
        stored = queue.Message(0, 0, failure.job)
        schema = stored.target.schema if stored.target else "public"
        row_ids = stored.row_ids or [failure.object_pk]
        target = queue.Target(schema, config.table, config.function_name, config.queue_column)
        body = queue.Message.new(target, row_ids).body
        if isinstance(failure.job, dict) and failure.job.get("origin"):
            body["origin"] = failure.job["origin"]  # a backfill's row is no write's
        bodies.append(body)
        done.append(failure.pk)
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        queue.send_batch(cursor, bodies)
        EmbeddingFailure.objects.using(using).filter(pk__in=done).delete()
    result.queued = len(bodies)
    if bodies:
        logger.info("Queued %d failed rows again.", len(bodies), extra={"rows": len(bodies)})
    return result


def discard(failures: models.QuerySet[EmbeddingFailure]) -> int:
    """Forget the failures (the rows keep a NULL vector until their text changes)."""
    count, _ = failures.delete()
    return count
