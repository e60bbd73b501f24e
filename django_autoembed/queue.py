"""Thin wrappers over the pgmq calls this app makes. Values are always parameters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql

from . import conf


@dataclass
class Message:
    """A queue message as read from pgmq (or rebuilt from an endpoint job)."""

    msg_id: int
    read_ct: int
    body: Any
    enqueued_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        prior = self.body.get("attempts", 0) if isinstance(self.body, dict) else 0
        return (prior if isinstance(prior, int) else 0) + self.read_ct


def name() -> str:
    return str(conf.get("QUEUE"))


def read(cursor: Any, qty: int, visibility_timeout: int) -> list[Message]:
    cursor.execute(
        "select msg_id, read_ct, message, enqueued_at from pgmq.read(%s, %s, %s)",
        [name(), visibility_timeout, qty],
    )
    return [Message(r[0], r[1], _json(r[2]), r[3]) for r in cursor.fetchall()]


def send_batch(cursor: Any, bodies: list[dict[str, Any]], delay: int = 0) -> None:
    if bodies:
        cursor.execute(
            "select pgmq.send_batch(%s, %s::jsonb[], %s)",
            [name(), [json.dumps(b) for b in bodies], int(delay)],
        )


def delete(cursor: Any, msg_ids: list[int]) -> None:
    if msg_ids:
        cursor.execute("select pgmq.delete(%s, %s::bigint[])", [name(), msg_ids])


def archive(cursor: Any, msg_ids: list[int]) -> None:
    if msg_ids:
        cursor.execute("select pgmq.archive(%s, %s::bigint[])", [name(), msg_ids])


def set_vt(cursor: Any, msg_ids: list[int], seconds: int) -> None:
    if msg_ids:
        cursor.execute("select msg_id from pgmq.set_vt(%s, %s::bigint[], %s)", [name(), msg_ids, int(seconds)])


def release(cursor: Any, msg_ids: list[int]) -> None:
    """Hand back messages read but not worked on: visible now, and the read not counted as an attempt."""
    if msg_ids:
        cursor.execute(
            "update pgmq.q_" + _table_suffix() + " set vt = clock_timestamp(), read_ct = greatest(read_ct - 1, 0) "
            "where msg_id = any(%s::bigint[])", [msg_ids])


def next_visible_in(cursor: Any) -> float | None:
    """Seconds until the next hidden message becomes visible (None: the queue is empty)."""
    cursor.execute("select extract(epoch from min(vt) - clock_timestamp()) from pgmq.q_" + _table_suffix())
    row = cursor.fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


def lookup(cursor: Any, msg_ids: list[int]) -> dict[int, Message]:
    """Messages by id, straight from the queue table (for jobs posted to the endpoint)."""
    if not msg_ids:
        return {}
    cursor.execute(
        "select msg_id, read_ct, message, enqueued_at from pgmq.q_" + _table_suffix()
        + " where msg_id = any(%s::bigint[])",
        [msg_ids],
    )
    return {r[0]: Message(r[0], r[1], _json(r[2]), r[3]) for r in cursor.fetchall()}


def _table_suffix() -> str:
    # pgmq itself restricts queue names to [a-z0-9_]; refuse anything else here too.
    queue = name()
    if not queue.replace("_", "").isalnum() or not queue.isascii() or queue != queue.lower():
        raise ValueError(f"AUTOEMBED['QUEUE'] = {queue!r}: use lowercase letters, digits and '_'.")
    return queue


def depth(cursor: Any) -> tuple[int, float | None]:
    """(messages in the queue, fractional seconds the oldest has waited)."""
    cursor.execute("select count(*), extract(epoch from clock_timestamp() - min(enqueued_at)) from pgmq.q_"
                   + _table_suffix())
    count, oldest = cursor.fetchone()
    return int(count), None if oldest is None else float(oldest)


def exists(cursor: Any) -> bool:
    """Whether the queue's table is there (migrate and autoembed_sync create it)."""
    cursor.execute("select to_regclass(%s) is not null", ["pgmq.q_" + _table_suffix()])
    return bool(cursor.fetchone()[0])


def table() -> sql.Identifier:
    """The queue's table, for queries composed with psycopg.sql."""
    return sql.Identifier("pgmq", "q_" + _table_suffix())


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value
