"""What embedding costs: tokens sent per config and day, and their price.

Counted from what the provider bills: the ``usage`` of each answer (the
Batch API's output lines too); for a provider that reports none, its own
tokenizer's count. One upsert per config per batch adds to the day's row.
``PRICES`` (US dollars per million tokens, by model) turns tokens into an
estimate, the Batch API's at ``BATCH_PRICE`` of it; ``autoembed_status`` and
the admin show both.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db import DatabaseError, ProgrammingError, connections, models, transaction
from django.db.models import Sum
from django.utils import timezone
from psycopg import sql

from . import settings
from . import sql as sqlfiles

logger = logging.getLogger(__name__)


class UsageMode(models.TextChoices):
    """How the tokens were sent: each has its price (the Batch API's at BATCH_PRICE)."""

    API = "api", "embeddings API"
    BATCH = "batch", "Batch API"
    QUERY = "query", "search queries"


class EmbeddingUsage(models.Model):
    """Tokens one config sent to its provider on one day (UTC), by way of sending."""

    day = models.DateField()
    config = models.CharField(max_length=255, help_text="app_label.Model.config")
    model = models.CharField(max_length=255, help_text="the provider's model")
    mode = models.CharField(
        max_length=16,
        choices=UsageMode.choices,
        default=UsageMode.API,
    )
    requests = models.BigIntegerField(default=0)
    inputs = models.BigIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)

    class Meta:
        app_label = "django_autoembed"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "config", "model", "mode"], name="autoembed_usage_unique_day"
            )
        ]
        ordering = ["-day", "config"]
        verbose_name_plural = "embedding usage"

    def __str__(self) -> str:
        return f"{self.day} {self.config}: {self.tokens} tokens ({self.mode})"

    @property
    def cost(self) -> float | None:
        """Estimated US dollars, or None when PRICES has no price for the model."""
        return price(self.model, self.mode, self.tokens)


def price(model: str, mode: str, tokens: int) -> float | None:
    per_million = (settings.current().prices or {}).get(model)
    if per_million is None:
        return None
    share = float(settings.current().batch_price) if mode == UsageMode.BATCH else 1.0
    return float(per_million) * share * tokens / 1_000_000


def record(
    using: str,
    config: str,
    model: str,
    *,
    requests: int,
    inputs: int,
    tokens: int,
    mode: str = UsageMode.API,
) -> None:
    """Add to today's usage of ``config``; never fails the caller (the log says why)."""
    if not (requests or inputs or tokens):
        return
    statement = sqlfiles.statement(
        "usage.sql", "record", usage=sql.Identifier(EmbeddingUsage._meta.db_table)
    )
    try:
        # Its own short transaction: the day's row is shared by every worker, and holding its
        # lock through a batch's write would queue the workers behind one another.
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(
                statement, [timezone.now().date(), config, model, mode, requests, inputs, tokens]
            )
    except ProgrammingError as exc:
        logger.warning("Usage of %s not recorded (%s).", config, exc)


# Search queries are counted in memory and written every FLUSH_EVERY seconds by a thread of
# their own: a search runs inside the caller's transaction (ATOMIC_REQUESTS, a read-only
# one), where an upsert of the day's row would hold its lock until the request ends, making
# every other search wait, or fail outright.
FLUSH_EVERY = 2.0
_queries: dict[tuple[str, str, str], list[int]] = {}  # (database, config, model): counts
_queries_lock = threading.Lock()
# Held while counts taken from _queries are written: a flush returns only once every count
# taken before it is in the database, whoever took it.
_writing = threading.Lock()
_flusher: threading.Thread | None = None


def count_query(using: str, config: str, model: str, tokens: int) -> None:
    """Count one search query's embedding; written soon, outside the caller's transaction."""
    global _flusher
    with _queries_lock:
        counts = _queries.setdefault((using, config, model), [0, 0, 0])
        counts[0] += 1
        counts[1] += 1
        counts[2] += tokens
        if _flusher is None or not _flusher.is_alive():
            _flusher = threading.Thread(target=_flush_forever, name="autoembed-usage", daemon=True)
            _flusher.start()


def flush_queries() -> None:
    """Write the search queries counted so far (the flusher does it every FLUSH_EVERY s)."""
    with _writing:
        _write_queries()


def _write_queries() -> None:
    with _queries_lock:
        taken = dict(_queries)
        _queries.clear()
    for (using, config, model), (requests, inputs, tokens) in taken.items():
        try:
            record(
                using,
                config,
                model,
                requests=requests,
                inputs=inputs,
                tokens=tokens,
                mode=UsageMode.QUERY,
            )
        except (DatabaseError, RuntimeError) as exc:  # RuntimeError: no database access here
            logger.warning("Usage of %s's search queries not recorded (%s).", config, exc)


def discard_queries() -> None:
    """Forget the search queries counted and not yet written (tests start from nothing);
    counts a flush is writing now are written first."""
    with _writing, _queries_lock:
        _queries.clear()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_EVERY)
        try:
            flush_queries()
            for using in list(connections):  # this thread's own connections
                connections[using].close()
        except Exception as exc:  # this thread must outlive any one failure
            logger.warning("Search queries' usage not written (%s); tried again later.", exc)


atexit.register(flush_queries)


@dataclass
class UsageSummary:
    tokens_today: int
    tokens_30d: int
    cost_30d: float | None  # None: no price known for a model used


def summary(using: str, config: str, today: date | None = None) -> UsageSummary:
    today = today or timezone.now().date()
    rows = EmbeddingUsage.objects.using(using).filter(
        config=config, day__gt=today - timedelta(days=30)
    )
    total_today = rows.filter(day=today).aggregate(n=Sum("tokens"))["n"] or 0
    grouped: list[Any] = list(
        rows.values("model", "mode").annotate(tokens=Sum("tokens")).order_by()
    )
    costs = [price(g["model"], g["mode"], g["tokens"]) for g in grouped]
    cost = None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
    return UsageSummary(
        tokens_today=int(total_today),
        tokens_30d=int(sum(g["tokens"] for g in grouped)),
        cost_30d=cost if grouped else 0.0,
    )
