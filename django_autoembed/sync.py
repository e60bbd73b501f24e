"""After migrate (and ``manage.py autoembed_sync``): make the database match the settings.

- The queue: the triggers write to ``AUTOEMBED["QUEUE"]``; when that name
  changes, the jobs still waiting in the old queue move to the new one.
- Per-model objects made by an earlier version of this app are rendered anew.
- The push path: endpoint URL and token, and the pg_cron job.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, transaction
from psycopg import sql

from . import queue
from . import sql as sqlfiles
from .declarations import registry
from .install import ensure_queue
from .push import PUSH_IDLE_PREFIXES, sync_push
from .triggers import SQL_VERSION, EmbeddingTrigger

logger = logging.getLogger(__name__)


def _query(key: str, **names: sql.Composable) -> str:
    return sqlfiles.statement("sync.sql", key, **names)


def installed(connection: Any) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(_query("installed"))
        return bool(cursor.fetchone()[0])


def sync(using: str = "default") -> list[str]:
    """Make the database match AUTOEMBED; returns lines saying what was done."""
    connection = connections[using]
    if not installed(connection):
        return []
    said = sync_queue(using)
    said += refresh_objects(using)
    said += sync_push(connection)
    return said


def sync_queue(using: str) -> list[str]:
    """Point the triggers at the configured queue, and move there the jobs left in queues used
    before (workers still running the old settings may have put some back since)."""
    connection = connections[using]
    name = queue.name()
    said = []
    if ensure_queue(connection, name):
        said.append(f"autoembed: created queue {name!r}")
    with connection.cursor() as cursor:
        cursor.execute(_query("queue_name"))
        old = cursor.fetchone()[0]
        former = former_queues(cursor)
    if old != name:
        with transaction.atomic(using=using), connection.cursor() as cursor:
            # Writers already past queue_name() wait here, then land in the old queue:
            # the second sweep below, after they are done, moves theirs too.
            if queue.exists(cursor, old):
                cursor.execute(_query("lock_queue", queue=queue.tables(old)["queue"]))
            cursor.execute(_query("set_queue_name", name=sql.Literal(name)))
            former = [q for q in [*former, old] if q != name]
            cursor.execute(_query("set_former_queues"), [",".join(dict.fromkeys(former))])
        said.append(f"autoembed: triggers now queue into {name!r}")
    for each in former:
        moved = 0
        with transaction.atomic(using=using), connection.cursor() as cursor:
            if queue.exists(cursor, each):
                cursor.execute(_query("lock_queue", queue=queue.tables(each)["queue"]))
                moved = _move(cursor, each, name)
        if moved:
            said.append(f"autoembed: moved {moved} waiting jobs from queue {each!r} to {name!r}")
    return said


def former_queues(cursor: Any) -> list[str]:
    """Queues the triggers wrote to before AUTOEMBED['QUEUE'] changed (readable by the owner)."""
    cursor.execute(_query("former_queues"))
    row = cursor.fetchone()
    return [q for q in (row[0] or "").split(",") if q] if row else []


def _move(cursor: Any, old: str, new: str) -> int:
    if not queue.exists(cursor, old):
        return 0
    cursor.execute(
        _query("move_jobs", old=queue.tables(old)["queue"], new=queue.tables(new)["queue"])
    )
    return int(cursor.fetchone()[0])


def refresh_objects(using: str) -> list[str]:
    """Render anew the triggers and content functions an earlier version of this app made.

    Only objects that still carry an earlier version's fingerprint of their
    current declaration are touched; objects edited by hand are left for the
    drift check to report.
    """
    connection = connections[using]
    refreshed = []
    for config in registry.on_database(using):
        model = config.model_class
        trigger = EmbeddingTrigger.for_config(config)
        table = sql.Identifier(config.table).as_string(None)
        with connection.cursor() as cursor:
            cursor.execute(
                sqlfiles.statement("checks.sql", "trigger_state"),
                [table, trigger.trigger_names()["insert_trigger"]],
            )
            row = cursor.fetchone()
        if row is None or row[0] == trigger.fingerprint():
            continue
        if row[0] not in {trigger.fingerprint(v) for v in range(1, SQL_VERSION)}:
            continue
        with transaction.atomic(using=using), connection.schema_editor(atomic=False) as editor:
            editor.execute(trigger.remove_sql(model, editor))
            editor.execute(trigger.create_sql(model, editor))
        refreshed.append(config.label)
    if not refreshed:
        return []
    return [
        f"autoembed: brought the triggers of {', '.join(refreshed)} up to SQL version {SQL_VERSION}"
    ]


def post_migrate_sync(
    sender: Any,
    using: str = "default",
    verbosity: int = 1,
    plan: Any = None,
    stdout: Any = None,
    **kwargs: Any,
) -> None:
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
