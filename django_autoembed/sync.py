"""After migrate: point the database at Django's settings (queue, push path)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections

from . import conf
from .install import ensure_queue
from .push import PUSH_IDLE_PREFIXES

logger = logging.getLogger(__name__)


def installed(connection: Any) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("select to_regprocedure('autoembed.queue_name()') is not null "
                       "and to_regnamespace('pgmq') is not null")
        return bool(cursor.fetchone()[0])


def sync(using: str = "default") -> list[str]:
    """Make the database match AUTOEMBED; returns lines saying what was done."""
    connection = connections[using]
    if not installed(connection):
        return []
    said: list[str] = []
    name = conf.get("QUEUE")
    with connection.cursor() as cursor:
        cursor.execute("select autoembed.queue_name()")
        if cursor.fetchone()[0] != name:
            from psycopg import sql

            cursor.execute(sql.SQL(
                "create or replace function autoembed.queue_name() returns text language sql "
                "immutable as $$ select {}::text $$").format(sql.Literal(name)).as_string(None))
            said.append(f"autoembed: triggers now queue into {name!r}")
    if ensure_queue(connection, name):
        said.append(f"autoembed: created queue {name!r}")
    from .push import sync_push

    said.extend(sync_push(connection))
    return said


def post_migrate_sync(sender: Any, using: str = "default", verbosity: int = 1, plan: Any = None,
                      stdout: Any = None, **kwargs: Any) -> None:
    lines = sync(using)
    # What sync did is news; that the push path is off is worth saying when our
    # migrations were just applied, not on every later migrate.
    installing = any(migration.app_label == "django_autoembed" for migration, _ in plan or [])
    if not installing:
        lines = [line for line in lines if not line.startswith(PUSH_IDLE_PREFIXES)]
    for line in lines:
        if stdout is None:
            logger.info(line)
        elif verbosity >= 1:
            stdout.write(line)
