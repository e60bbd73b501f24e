"""Queue rows whose embedding is NULL (existing data, or after adding a config)."""

from __future__ import annotations

from typing import Any

from django.db import connections
from psycopg import sql

from . import sql as sqlfiles
from .declarations import EmbeddingConfig
from .pipeline.target import schema_of
from .queue import BACKFILL

PAGE = 10_000


def row_names(cursor: Any, config: EmbeddingConfig, using: str) -> tuple[str, dict[str, Any]]:
    """The schema of ``config``'s table, and the names its row queries fill in: the table,
    key, column, content function, chunk table, and ``unembedded`` (the condition a row
    without a vector, or without chunks, meets)."""
    schema = schema_of(cursor, config.table) or "public"
    names: dict[str, Any] = {
        "table": sql.Identifier(schema, config.table),
        "pk": sql.Identifier(config.pk_column),
        "col": sql.Identifier(config.column),
        "fn": sql.Identifier(schema, config.function_name),
        "pktype": sql.SQL(config.model_class._meta.pk.rel_db_type(connections[using])),
        "chunks": sql.Identifier(schema, config.chunk_table),
    }
    unembedded = "unembedded_chunked" if config.chunked else "unembedded_column"
    names["unembedded"] = sqlfiles.composed("processing.sql", unembedded, **names)
    return schema, names


def backfill(config: EmbeddingConfig, *, using: str = "default") -> int:
    """Queue every row of ``config`` with a NULL vector and non-empty text, as the backfill's
    jobs (the only ones a ``--batch-api`` worker sends to batches); returns the count."""
    with connections[using].cursor() as cursor:
        schema, names = row_names(cursor, config, using)
        target = [schema, config.table, config.function_name, config.queue_column, BACKFILL]
        total = 0
        last: str | None = None
        while True:
            after = (
                sqlfiles.composed("processing.sql", "after_key", **names)
                if last is not None
                else sql.SQL("")
            )
            params: list[Any] = ([last] if last is not None else []) + [PAGE, *target]
            cursor.execute(
                sqlfiles.statement("processing.sql", "backfill_page", after=after, **names), params
            )
            queued, last = cursor.fetchone()
            total += queued or 0
            if not queued or queued < PAGE:
                return total
