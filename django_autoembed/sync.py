"""After migrate: point the database at Django's settings (queue, push path)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections

from . import conf
from .install import ensure_queue

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


def post_migrate_sync(sender: Any, using: str = "default", verbosity: int = 1, **kwargs: Any) -> None:
    for line in sync(using):
        if verbosity >= 1:
            print(line)
