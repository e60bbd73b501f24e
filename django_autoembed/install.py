"""Installing pgmq and the queue; used by the first migration and by sync."""

from __future__ import annotations

import logging
from typing import Any

from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from . import conf

logger = logging.getLogger(__name__)


def _one(cursor: Any, query: str, params: Any = None) -> Any:
    cursor.execute(query, params)
    row = cursor.fetchone()
    return row[0] if row else None


def install_pgmq(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create extension pgmq where the server has it, else run the SQL the pgmq package bundles."""
    with schema_editor.connection.cursor() as cursor:
        if _one(cursor, "select to_regnamespace('pgmq') is not null"):
            pass  # already there (extension or an earlier SQL install)
        elif _one(cursor, "select count(*) from pg_available_extensions where name = 'pgmq'"):
            cursor.execute("create extension if not exists pgmq")
        else:
            from pgmq.install import get_embedded_install_sql

            cursor.execute(get_embedded_install_sql())
            logger.info("pgmq installed from the SQL bundled with the pgmq package")
    ensure_queue(schema_editor.connection)


def ensure_queue(connection: Any, name: str | None = None) -> bool:
    """Create the queue if it is missing; True if it was created."""
    name = name or conf.get("QUEUE")
    with connection.cursor() as cursor:
        if _one(cursor, "select count(*) from pgmq.meta where queue_name = %s", [name]):
            return False
        cursor.execute("select pgmq.create(%s)", [name])
        return True


def drop_pgmq(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Drop our queue; drop pgmq itself only when no other queue uses it."""
    with schema_editor.connection.cursor() as cursor:
        if not _one(cursor, "select to_regnamespace('pgmq') is not null"):
            return
        cursor.execute(
            "select pgmq.drop_queue(queue_name) from pgmq.meta where queue_name = %s",
            [conf.get("QUEUE")],
        )
        if _one(cursor, "select count(*) from pgmq.meta"):
            return
        if _one(cursor, "select count(*) from pg_extension where extname = 'pgmq'"):
            cursor.execute("drop extension pgmq cascade")
        else:
            cursor.execute("drop schema pgmq cascade")
