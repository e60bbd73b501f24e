"""The sessions that drop and build indexes: their own connection and timeouts, and the
advisory lock that keeps two workers from changing one index at once."""

from __future__ import annotations

import re
import zlib
from typing import Any

from .. import settings
from .. import sql as sqlfiles
from ..db import connect
from ..declarations import EmbeddingConfig


def apply(conn: Any, values: dict[str, str]) -> None:
    """Set these session settings on a connection of our own."""
    conn.execute(
        sqlfiles.statement("hnsw.sql", "set_session"), [list(values), list(values.values())]
    )


_LAUNCHED = re.compile(r"using (\d+) parallel workers")


def launched(notice: Any) -> list[int]:
    found = _LAUNCHED.search(notice.message_primary or "")
    return [int(found.group(1))] if found else []


def build_settings(lock_timeout: float | None = None) -> dict[str, str]:
    """The bulk build's session settings.

    Postgres gives a build parallel workers by the size of the table's main heap, but a
    vector of more than ~500 dimensions is stored out of line (TOAST): 52,000 rows of 1,536
    dims and short text made an 832-page heap, under the 8 MB ``min_parallel_table_scan_size``,
    so the build ran in one process. With the threshold at 0 for this session the build gets
    the parallel workers ``max_parallel_maintenance_workers`` allows, which halved it on 2
    cores (20,000 such rows: 29.5 s, then 14.8 s).
    """
    values = {
        "maintenance_work_mem": str(settings.current().index_build_memory),
        "min_parallel_table_scan_size": "0",
        # pgvector says at DEBUG1 how many parallel workers it launched: the log says it on.
        "client_min_messages": "debug1",
    }
    values.update(ddl_timeouts(lock_timeout))
    workers = settings.current().index_build_workers
    if workers is not None:
        values["max_parallel_maintenance_workers"] = str(int(workers))
    return values


def ddl_timeouts(lock_timeout: float | None = None) -> dict[str, str]:
    """The timeouts of the sessions that drop and build indexes.

    A guard rail set for the application's role or database (statement_timeout = 1s, say)
    would cancel a build of any size, again and again, leaving the index invalid for good:
    these sessions set no statement limit. A drop or a build waits for the transactions
    that hold the table (CONCURRENTLY); it waits INDEX_LOCK_TIMEOUT seconds at most, then
    gives up (an incident), and a later tick tries again.
    """
    lock = settings.current().index_lock_timeout if lock_timeout is None else lock_timeout
    return {
        "statement_timeout": "0",
        "lock_timeout": "0" if lock is None else f"{max(1, int(float(lock) * 1000))}ms",
        "idle_in_transaction_session_timeout": "0",
        "idle_session_timeout": "0",
    }


class Autocommit:
    """A connection of its own, in autocommit (CONCURRENTLY refuses transaction blocks), with
    the DDL session's timeouts; listed in ``running`` while open, to be cancelled on stop."""

    def __init__(
        self, using: str, running: set[Any] | None = None, lock_timeout: float | None = None
    ) -> None:
        self.using = using
        self.running = running
        self.lock_timeout = lock_timeout

    def __enter__(self) -> Any:
        self.conn = connect(self.using)
        apply(self.conn, ddl_timeouts(self.lock_timeout))
        if self.running is not None:
            self.running.add(self.conn)
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        if self.running is not None:
            self.running.discard(self.conn)
        self.conn.close()


# The first half of every advisory lock key of ours ("aemb"); the second names the config.
LOCK_SPACE = 0x61656D62


def lock_key(label: str) -> int:
    """The config's half of its advisory lock key: a signed 32-bit integer, as Postgres's
    two-key ``pg_try_advisory_lock(integer, integer)`` takes it, for every label (an
    unsigned CRC of 2**31 or more would travel as a bigint, and no such function exists)."""
    key = zlib.crc32(f"autoembed:index:{label}".encode())
    return key - 2**32 if key >= 2**31 else key


class Advisory:
    """A session advisory lock per config (on its own connection), taken without waiting."""

    def __init__(self, using: str, config: EmbeddingConfig) -> None:
        self.using = using
        self.key = lock_key(config.label)

    def __enter__(self) -> bool:
        self.conn = connect(self.using)
        # Held for the whole drop or build: a guard rail must not end this session early.
        apply(self.conn, {"idle_session_timeout": "0"})
        got = self.conn.execute(
            sqlfiles.statement("hnsw.sql", "try_lock"), [LOCK_SPACE, self.key]
        ).fetchone()
        return bool(got and got[0])

    def __exit__(self, *exc: Any) -> None:
        self.conn.close()  # ends the session, and the lock with it
