"""Rows that gave up after MAX_ATTEMPTS: record them as EmbeddingFailure rows."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db.models import F

if TYPE_CHECKING:
    from .processing import _Row

logger = logging.getLogger(__name__)


def record_failures(dead: list[tuple[_Row, int]]) -> None:
    from .models import EmbeddingFailure

    for row, attempts in dead:
        body = row.message.body if isinstance(row.message.body, dict) else {"body": row.message.body}
        job = {k: v for k, v in body.items() if k not in ("id", "ids", "attempts")}
        job["id"] = row.raw_pk
        label = row.config.label if row.config else "unknown"
        table = row.config.table if row.config else str(body.get("table", ""))
        error = (row.outcome.error if row.outcome else None) or "failed"
        updated = EmbeddingFailure.objects.filter(config=label, object_pk=str(row.raw_pk)).update(
            error=error, attempts=F("attempts") + attempts, job=job
        )
        if not updated:
            EmbeddingFailure.objects.create(
                config=label, table=table, object_pk=str(row.raw_pk), job=job, error=error, attempts=attempts
            )
        logger.error(
            "Gave up embedding %s pk=%s after %d attempts: %s", label, row.raw_pk, attempts, error,
            extra={"config": label, "pk": str(row.raw_pk), "attempts": attempts},
        )
