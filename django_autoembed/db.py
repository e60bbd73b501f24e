"""Connections the worker and the endpoint open, and the session settings their work needs.

A database or role often sets a guard rail for the application (``statement_timeout =
1s``, say). The worker's statements are of another size: one UPDATE writes a batch of
vectors through an HNSW index. So the sessions that process batches set their own
``statement_timeout`` from ``AUTOEMBED["STATEMENT_TIMEOUT"]`` (None keeps the database's),
and a statement cancelled anyway is told apart from a lost connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from . import settings
from . import sql as sqlfiles

# SQLSTATE of a statement cancelled by statement_timeout (or by pg_cancel_backend).
QUERY_CANCELED = "57014"


def connect(using: str = "default") -> psycopg.Connection[Any]:
    """A separate autocommit psycopg connection with Django's settings for ``using``."""
    from django.db import connections

    params = connections[using].get_connection_params()
    # Django's own cursor factory and adapters context belong to its connection only.
    params = {k: v for k, v in params.items() if k not in ("cursor_factory", "context")}
    return psycopg.connect(**params, autocommit=True)


def statement_timeout() -> str | None:
    """The worker's ``statement_timeout`` as Postgres takes it ('300s'; '0': none), or None to
    keep what the database or role sets."""
    seconds = settings.current().statement_timeout
    if seconds is None:
        return None
    return f"{max(0, int(float(seconds) * 1000))}ms"


def prepare(connection: Any) -> None:
    """Give a Django connection the worker's session settings, once per database session."""
    connection.ensure_connection()
    raw = connection.connection
    if getattr(connection, "_autoembed_session", None) is raw:
        return
    value = statement_timeout()
    if value is not None:
        with connection.cursor() as cursor:
            cursor.execute(sqlfiles.statement("session.sql", "set_statement_timeout"), [value])
        if not connection.get_autocommit() and not connection.in_atomic_block:
            raw.commit()
    connection._autoembed_session = raw


@contextmanager
def timeouts_for_batch(connection: Any) -> Iterator[None]:
    """The worker's statement_timeout around one batch on a connection that serves others too
    (the endpoint's request connection, kept across requests): set, then put back."""
    value = statement_timeout()
    if value is None:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(sqlfiles.statement("session.sql", "swap_statement_timeout"), [value])
        before = cursor.fetchone()[0]
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(sqlfiles.statement("session.sql", "set_statement_timeout"), [before])
        except Exception:  # a broken connection is closed by Django at the request's end
            pass


def cancelled(exc: BaseException) -> bool:
    """Whether Postgres cancelled a statement (a timeout), as opposed to losing the session."""
    seen: BaseException | None = exc
    chain: set[int] = set()
    while seen is not None and id(seen) not in chain:
        if getattr(seen, "sqlstate", None) == QUERY_CANCELED:
            return True
        chain.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


def current_timeout(connection: Any) -> str:
    """The session's statement_timeout as Postgres shows it ('?' where it cannot be read)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(sqlfiles.statement("session.sql", "statement_timeout"))
            return str(cursor.fetchone()[0])
    except Exception:
        return "?"


def raw(using: str) -> Any:
    """Django's connection for ``using``, opened, as the psycopg connection under it."""
    from django.db import connections

    connection = connections[using]
    connection.ensure_connection()
    return connection.connection


def end_read(using: str) -> None:
    """Commit what a read opened (outside autocommit), so no transaction stays open while the
    provider is called."""
    from django.db import connections

    conn = raw(using)
    if not conn.autocommit and not connections[using].in_atomic_block:
        conn.commit()
