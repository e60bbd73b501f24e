"""Queue rows whose embedding is NULL (existing data, or after adding a config)."""

from __future__ import annotations

from typing import Any

from django.db import connections
from psycopg import sql

from . import sql as sqlfiles
from .declarations import EmbeddingConfig

PAGE = 10_000


def backfill(config: EmbeddingConfig, *, using: str = "default") -> int:
    """Queue every row of ``config`` with a NULL vector and non-empty text; returns the count."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(
            sqlfiles.section("processing.sql", "table_schema"),
            [sql.Identifier(config.table).as_string(None)],
        )
        found = cursor.fetchone()
        schema = found[0] if found else "public"
        names: dict[str, Any] = {
            "table": sql.Identifier(schema, config.table),
            "pk": sql.Identifier(config.pk_column),
            "col": sql.Identifier(config.column),
            "fn": sql.Identifier(schema, config.function_name),
            "pktype": sql.SQL(config.model_class._meta.pk.rel_db_type(connection)),
        }
        if config.chunked:
            unembedded = sql.SQL(
                "not exists (select from {chunks} c where c.parent_id = t.{pk})"
            ).format(chunks=sql.Identifier(schema, config.chunk_table), pk=names["pk"])
        else:
            unembedded = sql.SQL("t.{col} is null").format(col=names["col"])
        names["unembedded"] = unembedded
        page = sql.SQL(sqlfiles.section("processing.sql", "backfill_page"))
        target = [schema, config.table, config.function_name, config.queue_column]
        total = 0
        last: str | None = None
        while True:
            after = (
                sql.SQL("and t.{pk} > %s::{pktype}").format(**names)
                if last is not None
                else sql.SQL("")
            )
            params: list[Any] = ([last] if last is not None else []) + [PAGE, *target]
            cursor.execute(page.format(after=after, **names).as_string(None), params)
            queued, last = cursor.fetchone()
            total += queued or 0
            if not queued or queued < PAGE:
                return total
