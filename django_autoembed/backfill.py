"""Queue rows whose embedding is NULL (existing data, or after adding a config)."""

from __future__ import annotations

from typing import Any

from django.db import connections
from psycopg import sql

from .config import EmbeddingConfig

CHUNK = 10_000


def backfill(config: EmbeddingConfig, *, using: str = "default") -> int:
    """Queue every row of ``config`` with a NULL vector and non-empty text; returns the count."""
    meta = config.model_class._meta
    connection = connections[using]
    names: dict[str, Any] = {
        "table": sql.Identifier(config.table),
        "pk": sql.Identifier(config.pk_column),
        "col": sql.Identifier(config.column),
        "fn": sql.Identifier(config.function_name),
        "pktype": sql.SQL(meta.pk.rel_db_type(connection)),
    }
    select = sql.SQL(
        "with page as (select t.{pk} as id from {table} t "
        "where t.{col} is null and coalesce({fn}(t), '') <> '' {after} order by t.{pk} limit %s) "
        "select autoembed.queue_ids(array_agg(to_jsonb(id)), n.nspname, c.relname, %s, %s), "
        "(array_agg(id order by id desc))[1]::text "
        "from page, pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.oid = %s::regclass group by n.nspname, c.relname"
    )
    total = 0
    last: str | None = None
    table_ref = sql.Identifier(config.table).as_string(None)
    with connection.cursor() as cursor:
        while True:
            after = sql.SQL("and t.{pk} > %s::{pktype}").format(**names) if last is not None else sql.SQL("")
            query = select.format(after=after, **names).as_string(None)
            params: list[Any] = ([last] if last is not None else []) + [CHUNK, config.function_name, config.column, table_ref]
            cursor.execute(query, params)
            row = cursor.fetchone()
            if not row or not row[0]:
                return total
            total += row[0]
            last = row[1]
            if row[0] < CHUNK:
                return total
