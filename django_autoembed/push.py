"""The push path: endpoint settings in the database and the pg_cron schedule."""

from __future__ import annotations

from typing import Any


def sync_push(connection: Any) -> list[str]:
    return []
