"""Installing pgmq and the queue (first migration, sync), and the extension facts others ask."""

from __future__ import annotations

import logging
from typing import Any

from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from . import queue
from . import sql as sqlfiles

logger = logging.getLogger(__name__)


def scalar(cursor: Any, key: str, params: Any = None) -> Any:
    """The first value of install.sql's query ``key`` (None without a row)."""
    cursor.execute(sqlfiles.statement("install.sql", key), params)
    row = cursor.fetchone()
    return row[0] if row else None


def has_extension(cursor: Any, name: str) -> bool:
    return bool(scalar(cursor, "has_extension", [name]))


def extension_available(cursor: Any, name: str) -> bool:
    """Whether the server could create extension ``name``."""
    return bool(scalar(cursor, "extension_available", [name]))


def install_pgmq(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create extension pgmq where the server has it, else run the SQL the pgmq package bundles."""
    with schema_editor.connection.cursor() as cursor:
        if scalar(cursor, "has_pgmq_schema"):
            pass  # already there (extension or an earlier SQL install)
        elif extension_available(cursor, "pgmq"):
            cursor.execute(sqlfiles.statement("install.sql", "create_pgmq"))
        else:
            from pgmq.install import get_embedded_install_sql

            cursor.execute(get_embedded_install_sql())
            logger.info("pgmq installed from the SQL bundled with the pgmq package")
    ensure_queue(schema_editor.connection)


def ensure_queue(connection: Any, name: str | None = None) -> bool:
    """Create the queue if it is missing; True if it was created."""
    name = name or queue.name()
    with connection.cursor() as cursor:
        if scalar(cursor, "queue_registered", [name]):
            return False
        cursor.execute(sqlfiles.statement("install.sql", "create_queue"), [name])
        return True


def drop_pgmq(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Drop our queue; drop pgmq itself only when no other queue uses it."""
    with schema_editor.connection.cursor() as cursor:
        if not scalar(cursor, "has_pgmq_schema"):
            return
        cursor.execute(sqlfiles.statement("install.sql", "drop_queue"), [queue.name()])
        if scalar(cursor, "queue_count"):
            return
        if has_extension(cursor, "pgmq"):
            cursor.execute(sqlfiles.statement("install.sql", "drop_pgmq"))
        else:
            cursor.execute(sqlfiles.statement("install.sql", "drop_pgmq_schema"))
