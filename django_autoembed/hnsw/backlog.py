"""A backlog's size as index deferral weighs it: queued rows per config, and the vectors
they will make (a chunked row's chunks, an edited one's changed chunks only)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import DatabaseError, connections
from psycopg import sql

from .. import queue, settings
from .. import sql as sqlfiles
from ..declarations import EmbeddingConfig, registry
from ..pipeline.target import schema_of
from .indexes import managed_index

# Seconds between a worker's looks at the backlog per config.
CHECK_EVERY = 1.0
# Seconds a config's vectors-per-row estimate is reused.
PER_ROW_TTL = 30.0
# Vectors an edit of a row that already has chunks is expected to make: only changed
# chunks are embedded again, and an edit changes one or two.
EDITED_ROW_VECTORS = 2.0
# A deferred index is built again once its backlog is this share of INDEX_DEFER_ROWS (a
# trickle of new writes must not keep it down; the build takes in what arrives meanwhile).
DRAINED_SHARE = 10


def drained_below(minimum: int | None) -> int:
    """A deferred index is built again once its backlog is this small."""
    return max(100, int(minimum or 0) // DRAINED_SHARE)


@dataclass
class Snapshot:
    """What a worker last read about the queue: queued rows per config label."""

    backlog: dict[str, int]
    read_at: float


class Backlog:
    """One process's estimates of the backlog on one database (a worker's lanes share it)."""

    def __init__(self, using: str) -> None:
        self.using = using
        # A Batch API worker sends the backfill of configs whose provider has a Batch API to
        # batches: it is no backlog of this worker's.
        self.skip_backfill = False
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._per_row: dict[str, tuple[float, float]] = {}  # label: (vectors a row, when)
        self._edited: dict[str, tuple[int, float]] = {}  # label: (queued rows with chunks, when)

    def forget(self) -> None:
        with self._lock:
            self._snapshot = None

    def rows(self, *, fresh: bool = False) -> dict[str, int]:
        """Queued rows per config label (every message, visible, hidden or delayed, but those
        a batch holds)."""
        with self._lock:
            snapshot = self._snapshot
            if not fresh and snapshot and time.monotonic() - snapshot.read_at < CHECK_EVERY:
                return snapshot.backlog
        with connections[self.using].cursor() as cursor:
            cursor.execute(queue.query("backlog"))
            rows = cursor.fetchall()
        by_label: dict[str, int] = {}
        for table, function, column, backfill, count in rows:
            config = registry.match(table, function, column)
            if config is None or (backfill and self.skip_backfill and _batched(config)):
                continue
            by_label[config.label] = by_label.get(config.label, 0) + int(count)
        with self._lock:
            self._snapshot = Snapshot(by_label, time.monotonic())
        return by_label

    def indexed(self, config: EmbeddingConfig) -> int:
        index = managed_index(config)
        assert index is not None
        with connections[self.using].cursor() as cursor:
            cursor.execute(sqlfiles.statement("hnsw.sql", "index_rows"), [index.name])
            row = cursor.fetchone()
        return max(0, int(row[0] or 0)) if row else 0

    def drained(self, config: EmbeddingConfig, backlog: dict[str, int], minimum: Any) -> bool:
        """Whether what is left of a deferred index's backlog (in vectors) is small now."""
        rows = backlog.get(config.label, 0)
        return not rows or rows * self.vectors_per_row(config) <= drained_below(minimum)

    def expected_vectors(self, config: EmbeddingConfig, rows: int) -> float:
        """Vectors ``rows`` queued rows of ``config`` will make: one a row; for chunks, a new
        row's chunks, but an edited row's changed chunks only (a few)."""
        per_row = self.vectors_per_row(config)
        if not config.chunked or rows * per_row < (settings.current().index_defer_rows or 0):
            return rows * per_row
        edited = min(rows, self._queued_with_chunks(config))
        return (rows - edited) * per_row + edited * min(per_row, EDITED_ROW_VECTORS)

    def _queued_with_chunks(self, config: EmbeddingConfig) -> int:
        """Queued rows of a chunked config that have chunks already (looked up every 30 s)."""
        with self._lock:
            cached = self._edited.get(config.label)
        if cached is not None and time.monotonic() - cached[1] < PER_ROW_TTL:
            return cached[0]
        statement = sqlfiles.statement(
            "hnsw.sql",
            "queued_with_chunks",
            queue=queue.tables()["queue"],
            chunks=sql.Identifier(config.chunk_table),
            pktype=sql.SQL(config.model_class._meta.pk.rel_db_type(connections[self.using])),
        )
        with connections[self.using].cursor() as cursor:
            cursor.execute(statement, [config.table, config.queue_column])
            edited = int(cursor.fetchone()[0] or 0)
        with self._lock:
            self._edited[config.label] = (edited, time.monotonic())
        return edited

    def vectors_per_row(self, config: EmbeddingConfig) -> float:
        """How many vectors a queued row of ``config`` makes (looked up every 30 s at most)."""
        if not config.chunked:
            return 1.0
        with self._lock:
            cached = self._per_row.get(config.label)
        if cached is not None and time.monotonic() - cached[1] < PER_ROW_TTL:
            return cached[0]
        try:
            value = self._vectors_per_row(config)
        except (DatabaseError, psycopg.Error):
            value = 1.0
        with self._lock:
            self._per_row[config.label] = (value, time.monotonic())
        return value

    def _vectors_per_row(self, config: EmbeddingConfig) -> float:
        """How many vectors a queued row makes: 1, or its chunks (as the planner counted;
        before any chunk exists, from the size of the newest rows' text at ~4 bytes a token)."""
        if not config.chunked:
            return 1.0
        with connections[self.using].cursor() as cursor:
            cursor.execute(sqlfiles.statement("hnsw.sql", "table_rows"), [config.chunk_table])
            chunks = max(0.0, float(cursor.fetchone()[0] or 0))
            cursor.execute(sqlfiles.statement("hnsw.sql", "table_rows"), [config.table])
            rows = max(0.0, float(cursor.fetchone()[0] or 0))
            if chunks and rows:
                return chunks / rows
            schema = schema_of(cursor, config.table) or "public"
            cursor.execute(
                sqlfiles.statement(
                    "hnsw.sql",
                    "text_bytes",
                    function=sql.Identifier(schema, config.function_name),
                    table=sql.Identifier(schema, config.table),
                    pk=sql.Identifier(config.pk_column),
                )
            )
            size = float(cursor.fetchone()[0] or 0)
        assert config.chunk_tokens is not None
        step = max(1, config.chunk_tokens - config.chunk_overlap)
        return max(1.0, size / 4 / step)


def _batched(config: EmbeddingConfig) -> bool:
    """Whether a Batch API worker sends ``config``'s backfill to batches (its provider has a
    Batch API): then that backfill is no backlog of the worker's."""
    from ..exceptions import ConfigurationError
    from ..providers import for_config
    from ..providers.base import BatchAPI

    try:
        return isinstance(for_config(config), BatchAPI)
    except ConfigurationError:  # a provider that cannot start: it embeds nothing
        return False
