"""HNSW search-time settings, for the search statement and nothing else.

pgvector's HNSW scan reads two settings while it runs: ``hnsw.ef_search``
(candidates kept, recall against speed) and ``hnsw.iterative_scan`` (keep
scanning until a filtered query has its k rows). They must hold for the
search query and for nothing else, however the queryset is evaluated: a
list, ``iterator()``, ``count()``, ``exists()``, an aggregate, a subquery of
another query, a prefetch, async iteration. So the distance expression
writes the settings it needs into its SQL as a comment, and one execute
wrapper on every connection applies them around exactly the statements that
carry it, restoring the previous values afterwards (``SET LOCAL`` inside the
caller's transaction, or a transaction of its own).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import transaction
from pgvector.django import CosineDistance
from psycopg import sql

from .. import sql as sqlfiles

MARK = "autoembed:hnsw"
_MARKED = re.compile(r"/\* autoembed:hnsw(?: ef_search=(\d+))? \*/")
# Strict order: an iterative scan never returns rows out of distance order.
ITERATIVE_SCAN = "strict_order"


class SearchDistance(CosineDistance):
    """Cosine distance whose SQL carries the HNSW settings its query needs (as a comment)."""

    def __init__(
        self, expression: Any, vector: Any, *, ef_search: int | None = None, **extra: Any
    ) -> None:
        self.ef_search = int(ef_search) if ef_search else None
        super().__init__(expression, vector, **extra)
        if hasattr(self, "_constructor_args"):
            self._constructor_args = (self._constructor_args[0], {**extra, "ef_search": ef_search})

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> tuple[str, Any]:
        sql, params = super().as_sql(compiler, connection, *args, **extra)
        settings = f" ef_search={self.ef_search}" if self.ef_search else ""
        return f"{sql} /* {MARK}{settings} */", params


def hnsw_settings(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Execute wrapper: run a statement that holds a search with the HNSW settings it asks for."""
    if MARK not in sql:
        return execute(sql, params, many, context)
    wanted = {"hnsw.iterative_scan": ITERATIVE_SCAN}
    ef = max((int(m) for m in _MARKED.findall(sql) if m), default=None)
    if ef:
        wanted["hnsw.ef_search"] = str(ef)
    connection = context["connection"]
    if connection.get_autocommit() and not connection.in_atomic_block:
        # A transaction of its own: the local settings end with it (a server-side cursor
        # made outside a transaction is WITH HOLD: its rows are read before the commit).
        with transaction.atomic(using=connection.alias):
            _set(connection, wanted)
            return execute(sql, params, many, context)
    before = _current(connection, list(wanted))
    _set(connection, wanted)
    try:
        result = execute(sql, params, many, context)
    except Exception:
        # A failed statement aborts the transaction, and the settings go with it; an error
        # raised before the server saw the statement leaves the transaction going.
        if _usable(connection):
            _restore(connection, before)
        raise
    cursor = context["cursor"]
    if isinstance(getattr(cursor, "cursor", None), psycopg.ServerCursor):
        # A server-side cursor in a transaction: the scan runs as its rows are fetched,
        # so the settings hold until the cursor is closed.
        _restore_on_close(cursor, connection, before)
    else:
        _restore(connection, before)  # the caller's transaction goes on: give it back what it had
    return result


def _usable(connection: Any) -> bool:
    raw = connection.connection
    return raw is not None and raw.info.transaction_status != psycopg.pq.TransactionStatus.INERROR


def _restore_on_close(cursor: Any, connection: Any, before: dict[str, str | None]) -> None:
    close = cursor.close

    def close_and_restore() -> None:
        try:
            close()
        finally:
            if _usable(connection) and (
                connection.in_atomic_block or not connection.get_autocommit()
            ):
                _restore(connection, before)

    cursor.close = close_and_restore


def _current(connection: Any, names: list[str]) -> dict[str, str | None]:
    with connection.cursor() as cursor:
        cursor.execute(sqlfiles.statement("hnsw.sql", "scan_current"), [names])
        return dict(cursor.fetchall())


def _set(connection: Any, values: dict[str, str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            sqlfiles.statement("hnsw.sql", "scan_set"), [list(values), list(values.values())]
        )


def _restore(connection: Any, values: dict[str, str | None]) -> None:
    with connection.cursor() as cursor:
        for name, value in values.items():
            if value is None:  # pgvector was not loaded before: back to the default
                section, part = name.split(".", 1)  # our own names: hnsw.<setting>
                cursor.execute(
                    sqlfiles.statement(
                        "hnsw.sql", "scan_default", name=sql.Identifier(section, part)
                    )
                )
            else:
                cursor.execute(sqlfiles.statement("hnsw.sql", "scan_set"), [[name], [value]])


def install_wrapper(sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
    """``connection_created`` receiver: put ``hnsw_settings`` on the connection once."""
    if (
        connection is not None
        and connection.vendor == "postgresql"
        and hnsw_settings not in connection.execute_wrappers
    ):
        connection.execute_wrappers.append(hnsw_settings)
