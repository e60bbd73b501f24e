"""The push path: endpoint settings in the database and the pg_cron schedule."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from psycopg import sql

from . import settings
from . import sql as sqlfiles
from .install import extension_available, has_extension

logger = logging.getLogger(__name__)

JOB_NAME = "autoembed-process-embeddings"
# What a tick may post, and how it is sized, comes from AUTOEMBED: the cron command
# carries the values (autoembed_sync writes it anew when they change).
# The function it calls keeps this one name (process_embeddings, the 6-parameter overload);
# a changed body comes in a migration that redefines it.
FUNCTION = "autoembed.process_embeddings(int, int, int, int, boolean, interval)"


def process_command() -> str:
    """The SQL pg_cron runs every SCHEDULE, with the configured sizes."""
    rows, posts = int(settings.current().push_rows_per_post), int(settings.current().push_max_posts)
    # Room in the endpoint's body limit for the JSON around the jobs.
    body = int(int(settings.current().endpoint_max_body) * 0.9)
    timeout = int(float(settings.current().push_timeout) * 1000)
    values = {
        "rows": rows,
        "posts": posts,
        "body": body,
        "timeout": timeout,
        "split": bool(settings.current().push_split_packed),
        "keep": str(settings.current().push_keep_responses),
    }
    return sqlfiles.statement(
        "push.sql", "command", **{k: sql.Literal(v) for k, v in values.items()}
    )


# How sync_push's lines start when it only reports that the push path is not in use.
PUSH_IDLE_PREFIXES = ("autoembed: rows are embedded by",)


def enable_extensions(apps: Any, schema_editor: Any) -> None:
    """Create pg_net and pg_cron where the server offers them; skip quietly otherwise."""
    connection = schema_editor.connection
    for extension in ("pg_net", "pg_cron"):
        with connection.cursor() as cursor:
            if not extension_available(cursor, extension) or has_extension(cursor, extension):
                continue
            try:
                # pg_cron refuses databases other than cron.database_name; that is not our error.
                with transaction.atomic(using=connection.alias):
                    cursor.execute(
                        sqlfiles.statement(
                            "push.sql", "create_extension", name=sql.Identifier(extension)
                        )
                    )
            except Exception as exc:
                logger.info("Could not create extension %s: %s", extension, exc)


def sync_push(connection: Any) -> list[str]:
    """Store endpoint URL/token, and create, update or remove the cron job."""
    url, token, schedule = (
        settings.current().endpoint_url,
        settings.current().endpoint_token,
        settings.current().schedule,
    )
    with connection.cursor() as cursor:
        cursor.execute(sqlfiles.statement("push.sql", "installed"), [FUNCTION])
        if not cursor.fetchone()[0]:
            return []
        for key, value in (("endpoint_url", url), ("endpoint_token", token)):
            cursor.execute(sqlfiles.statement("push.sql", "save_setting"), [key, value])
        net, cron = has_extension(cursor, "pg_net"), has_extension(cursor, "pg_cron")
        if not (net and cron):
            missing = " and ".join(e for e, ok in (("pg_cron", cron), ("pg_net", net)) if not ok)
            return [
                f"autoembed: rows are embedded by `manage.py process_embeddings` (the push path "
                f"needs {missing}, which this database does not have)."
            ]
        cursor.execute(sqlfiles.statement("push.sql", "job"), [JOB_NAME])
        existing = cursor.fetchone()
        if schedule and url and token:
            command = process_command()
            if existing and (existing[1], existing[2]) == (schedule, command):
                return []
            cursor.execute(
                sqlfiles.statement("push.sql", "schedule"), [JOB_NAME, schedule, command]
            )
            return [f"autoembed: pg_cron job {JOB_NAME!r} runs every {schedule} and posts to {url}"]
        if existing:
            cursor.execute(sqlfiles.statement("push.sql", "unschedule"), [JOB_NAME])
            return [f"autoembed: removed pg_cron job {JOB_NAME!r}"]
        return [
            "autoembed: rows are embedded by `manage.py process_embeddings` (for the push path, "
            "set AUTOEMBED SCHEDULE, ENDPOINT_URL and ENDPOINT_TOKEN)."
        ]
