"""Send failed rows back to the queue (admin action and ``autoembed_retry``), or discard them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import connections, transaction
from django.db.models import QuerySet

from . import queue
from .config import registry

logger = logging.getLogger(__name__)


@dataclass
class RetryResult:
    queued: int = 0
    refused: list[str] = field(default_factory=list)  # why some failures were kept


def retry(failures: QuerySet) -> RetryResult:
    """Queue each failure's row again (a fresh job, attempts reset) and delete the failure.

    Failures whose config is no longer declared are kept and reported: their job
    would only fail again. Discard those instead.
    """
    result = RetryResult()
    using = failures.db
    jobs, done = [], []
    for failure in failures:
        try:
            config = registry.get(failure.config)
        except LookupError:
            result.refused.append(f"{failure.config} pk={failure.object_pk}: no such embedding is declared; "
                                  "discard it instead")
            continue
        job = {k: v for k, v in failure.job.items() if k != "attempts"}
        job.update({"table": config.table, "contentFunction": config.function_name,
                    "embeddingColumn": config.column})
        jobs.append(job)
        done.append(failure.pk)
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        queue.send_batch(cursor, jobs)
        failures.model.objects.using(using).filter(pk__in=done).delete()
    result.queued = len(jobs)
    if jobs:
        logger.info("Queued %d failed rows again.", len(jobs), extra={"rows": len(jobs)})
    return result


def discard(failures: QuerySet) -> int:
    """Forget the failures (the rows keep a NULL vector until their text changes)."""
    count, _ = failures.delete()
    return count
