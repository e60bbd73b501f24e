"""Queue messages and the pgmq calls this app makes, in one place.

A message names one row (``"id"``, the Supabase guide's shape) or, when a
statement changed many rows, several (``"ids"``), plus the target (schema,
table, content function, embedding column) and, when it was split off an
earlier message, the attempts its rows have used (``"attempts"``). Only
``Message`` reads or writes those keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from psycopg import sql

from . import settings
from . import sql as sqlfiles
from .exceptions import InvalidValue

# What ``origin`` says in the messages ``--backfill`` queues (the only ones the Batch API takes).
BACKFILL = "backfill"
# The origin of a job a model change leaves due to wake the push path: no write's.
NUDGE = "nudge"
# The keys naming a message's target, in the guide's spelling.
TARGET_KEYS = ("schema", "table", "contentFunction", "embeddingColumn")


@dataclass(frozen=True)
class Target:
    """Where a message's rows live and how their text and vector are found."""

    schema: str
    table: str
    function: str
    column: str

    def as_body(self) -> dict[str, str]:
        return dict(
            zip(TARGET_KEYS, (self.schema, self.table, self.function, self.column), strict=False)
        )


@dataclass
class Message:
    """One queue message: its id, how often it was read, and what its body says."""

    msg_id: int
    read_ct: int
    body: Any
    # When it shows again, as the read that took it set it (None: not read by a worker).
    vt: Any = None
    # When pgmq queued it (None: not read from the queue).
    enqueued_at: Any = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Message:
        msg_id, read_ct, body = row[:3]
        return cls(
            int(msg_id),
            int(read_ct),
            json.loads(body) if isinstance(body, (str, bytes)) else body,
            row[3] if len(row) > 3 else None,
            row[4] if len(row) > 4 else None,
        )

    @classmethod
    def new(
        cls,
        target: Target,
        row_ids: list[Any],
        *,
        msg_id: int = 0,
        read_ct: int = 0,
        attempts: int = 0,
    ) -> Message:
        """A message for ``row_ids`` of ``target`` (the body a trigger would send)."""
        return cls(msg_id, read_ct, _body(target.as_body(), row_ids, attempts))

    # -- what the body says --------------------------------------------------

    @cached_property
    def row_ids(self) -> list[Any]:
        """The row keys this message names; empty when they are malformed (see ``problem``)."""
        return [] if self._ids_problem else list(self._raw_ids)

    @cached_property
    def target(self) -> Target | None:
        if not isinstance(self.body, dict):
            return None
        values = [self.body.get(k) for k in TARGET_KEYS]
        names = [v for v in values if isinstance(v, str) and v]
        return Target(*names) if len(names) == len(TARGET_KEYS) else None

    @property
    def problem(self) -> str | None:
        """Why the message cannot be worked on, or None."""
        if not isinstance(self.body, dict):
            return "job is not a JSON object"
        if self._ids_problem:
            return self._ids_problem
        if self.target is None:
            return f"job needs string values for {', '.join(TARGET_KEYS)}"
        return None

    @property
    def prior_attempts(self) -> int:
        """Attempts used before this message was queued (it was split off an earlier one)."""
        prior = self.body.get("attempts", 0) if isinstance(self.body, dict) else 0
        return prior if isinstance(prior, int) and not isinstance(prior, bool) and prior > 0 else 0

    @property
    def attempts(self) -> int:
        """Attempts used by its rows, this read included."""
        return self.prior_attempts + self.read_ct

    @property
    def from_backfill(self) -> bool:
        """Whether ``process_embeddings --backfill`` queued it (a trigger's jobs say nothing)."""
        return isinstance(self.body, dict) and self.body.get("origin") == BACKFILL

    @property
    def from_batch(self) -> int | None:
        """The ``ProviderBatch`` it came back from (what that batch did not embed is the
        embeddings API's to do), or None."""
        found = self.body.get("from_batch") if isinstance(self.body, dict) else None
        return found if isinstance(found, int) and not isinstance(found, bool) else None

    def names(self, row_id: Any) -> bool:
        """Whether this message names ``row_id`` (compared as text, as JSON keys travel)."""
        return any(str(i) == str(row_id) for i in self.row_ids)

    def body_for(self, row_ids: list[Any], attempts: int) -> dict[str, Any]:
        """The body of a new message for some of this message's rows, carrying ``attempts``
        and when they were first queued (``queued_at``: their wait is the lag status shows)."""
        base = {k: v for k, v in self.body.items() if k not in ("id", "ids", "attempts")}
        if "queued_at" not in base and self.enqueued_at is not None:
            base["queued_at"] = round(self.enqueued_at.timestamp(), 3)  # Unix seconds
        return _body(base, row_ids, attempts)

    @cached_property
    def _raw_ids(self) -> Any:
        if not isinstance(self.body, dict):
            return None
        return self.body.get("ids") if "ids" in self.body else [self.body.get("id")]

    @cached_property
    def _ids_problem(self) -> str | None:
        ids = self._raw_ids
        if not isinstance(self.body, dict):
            return "job is not a JSON object"
        if (
            not isinstance(ids, list)
            or not ids
            or any(i is None or isinstance(i, (dict, list, bool)) for i in ids)
        ):
            return "job needs 'id' (or a list 'ids') of row keys"
        return None


# -- jobs posted to the endpoint --------------------------------------------------------

MAX_KEY = 2**63 - 1
# Most rows one posted job may name (a packed message names up to 500).
MAX_IDS = 10_000


@dataclass(frozen=True)
class PostedJob:
    """A job as pg_net posted it: its queue message's body and the message's id (``jobId``)."""

    body: dict[str, Any]  # as posted: answered back in completedJobs / failedJobs

    @property
    def job_id(self) -> int:
        return int(self.body["jobId"])

    @cached_property
    def message(self) -> Message:
        """The job read as its message would be (read once)."""
        return Message(self.job_id, 1, self.body)

    @property
    def row_ids(self) -> list[Any]:
        return self.message.row_ids

    @property
    def target(self) -> Target:
        target = self.message.target
        assert target is not None  # checked by parse_posted
        return target


def parse_posted(payload: Any) -> list[PostedJob]:
    """The endpoint's request body as jobs; InvalidValue saying what is wrong.

    A job names one row (``"id"``, the guide's shape) or several (``"ids"``, a
    packed message posted whole), its target, and the queue message it came
    from (``"jobId"``).
    """
    if not isinstance(payload, list):
        raise InvalidValue("body must be a JSON list of jobs")
    seen: set[int] = set()
    for n, job in enumerate(payload):
        _check_posted(n, job, seen)
    return [PostedJob(job) for job in payload]


def _check_posted(n: int, job: Any, seen: set[int]) -> None:
    if not isinstance(job, dict):
        raise InvalidValue(f"job {n} is not an object")
    missing = [k for k in ("jobId", *TARGET_KEYS) if k not in job]
    if "id" not in job and "ids" not in job:
        missing.insert(1, "id")
    if missing:
        raise InvalidValue(f"job {n} lacks {', '.join(missing)}")
    job_id = job["jobId"]
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 0 < job_id <= MAX_KEY:
        raise InvalidValue(f"job {n}: jobId must be a positive 64-bit integer")
    if job_id in seen:
        raise InvalidValue(f"job {n}: jobId {job_id} appears twice")
    seen.add(job_id)
    if "ids" in job:
        ids = job["ids"]
        if not isinstance(ids, list) or not 0 < len(ids) <= MAX_IDS:
            raise InvalidValue(f"job {n}: ids must be a list of 1 to {MAX_IDS} row keys")
        problem = next(filter(None, map(_key_problem, ids)), None)
        if problem:
            raise InvalidValue(f"job {n}: each of ids {problem}")
    elif problem := _key_problem(job["id"]):
        raise InvalidValue(f"job {n}: id {problem}")
    for key in TARGET_KEYS:
        if not isinstance(job[key], str) or not job[key] or len(job[key]) > 255:
            raise InvalidValue(
                f"job {n}: {key} must be a non-empty string of at most 255 characters"
            )


def _key_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return "must be an integer or a string"
    if isinstance(value, int) and abs(value) > MAX_KEY:
        return "is out of range (64-bit)"
    return None


def _body(base: dict[str, Any], row_ids: list[Any], attempts: int) -> dict[str, Any]:
    body = dict(base)
    body.update({"id": row_ids[0]} if len(row_ids) == 1 else {"ids": list(row_ids)})
    if attempts > 0:
        body["attempts"] = attempts
    return body


# -- the queue ---------------------------------------------------------------


def name() -> str:
    """The configured queue's name (pgmq allows lowercase letters, digits and '_')."""
    queue = str(settings.current().queue)
    if (
        not queue
        or not queue.replace("_", "").isalnum()
        or not queue.isascii()
        or queue != queue.lower()
    ):
        raise InvalidValue(
            f"AUTOEMBED['QUEUE'] = {queue!r}: use lowercase letters, digits and '_'."
        )
    return queue


def tables(queue: str | None = None) -> dict[str, sql.Identifier]:
    """The queue's pgmq tables, for queries composed with psycopg.sql: ``queue`` and ``archive``."""
    queue = queue or name()
    return {
        "queue": sql.Identifier("pgmq", f"q_{queue}"),
        "archive": sql.Identifier("pgmq", f"a_{queue}"),
    }


def query(key: str, queue: str | None = None) -> str:
    """A section of queue.sql with the queue's table names filled in."""
    return sqlfiles.statement("queue.sql", key, **tables(queue), queued_at=queued_at())


def queued_at() -> sql.Composed:
    """When a message's rows were first queued, as its body says (NULL: as pgmq says)."""
    return sqlfiles.composed("queue.sql", "queued_at")


def read(cursor: Any, qty: int, visibility_timeout: int) -> list[Message]:
    cursor.execute(query("read"), [name(), visibility_timeout, qty])
    return [Message.from_row(r) for r in cursor.fetchall()]


def send_batch(cursor: Any, bodies: list[dict[str, Any]], delay: float = 0) -> None:
    if bodies:
        cursor.execute(query("send_batch"), [name(), [json.dumps(b) for b in bodies], int(delay)])


def delete(cursor: Any, msg_ids: list[int]) -> None:
    if msg_ids:
        cursor.execute(query("delete"), [name(), msg_ids])


def archive(cursor: Any, msg_ids: list[int]) -> None:
    if msg_ids:
        cursor.execute(query("archive"), [name(), msg_ids])


def set_vt(cursor: Any, msg_ids: list[int], seconds: float) -> None:
    if msg_ids:
        cursor.execute(query("set_vt"), [name(), msg_ids, int(seconds)])


def release(cursor: Any, msg_ids: list[int], delay: float = 0) -> dict[int, Any]:
    """Hand back messages read but not worked on: visible after ``delay``, the read not
    counted. Returns when each shows again, by id (a message deleted since is absent)."""
    if not msg_ids:
        return {}
    cursor.execute(query("release"), [float(delay), msg_ids])
    return {int(msg_id): vt for msg_id, vt in cursor.fetchall()}


def recount(cursor: Any, msg_ids: list[int]) -> None:
    """Count a read again: messages released and then worked on after all."""
    if msg_ids:
        cursor.execute(query("recount"), [msg_ids])


def show_if_ours(cursor: Any, messages: list[Message]) -> None:
    """Make messages visible now, those still hidden as ``vt`` says we left them."""
    held = [m for m in messages if m.vt is not None]
    if held:
        cursor.execute(query("show_if_ours"), [[m.msg_id for m in held], [m.vt for m in held]])


def hold_for_batch(cursor: Any, messages: list[Message], batch: int, seconds: float) -> set[int]:
    """Mark messages as held by the batch ``batch`` (its record's id), hidden ``seconds``:
    those still hidden as ``vt`` says we left them. Returns the ids held."""
    if not messages:
        return set()
    ids, vts = [m.msg_id for m in messages], [m.vt for m in messages]
    cursor.execute(query("hold_for_batch"), [float(seconds), batch, ids, vts])
    return {int(msg_id) for (msg_id,) in cursor.fetchall()}


def back_from_batch(
    cursor: Any, msg_ids: list[int], batch: int, *, from_batch: int | None, delay: float = 0
) -> None:
    """The messages batch ``batch`` holds back in the queue after ``delay``, no longer held;
    marked ``from_batch`` when the embeddings API is to embed what the batch did not."""
    if msg_ids:
        cursor.execute(query("back_from_batch"), [float(delay), from_batch, msg_ids, batch])


def release_untouched(cursor: Any, messages: list[Message]) -> None:
    """Hand back, the read not counted, the messages nobody acknowledged since they were read
    (a batch cut short: those its acknowledgements moved, deleted or delayed stay so)."""
    held = [m for m in messages if m.vt is not None]
    if held:
        cursor.execute(query("release_untouched"), [[m.msg_id for m in held], [m.vt for m in held]])


def split_off(cursor: Any, message: Message, keep: int) -> Message:
    """Keep the first ``keep`` rows of a message read just now; send the rest on as a new
    message, visible at once and carrying the attempts spent before this read. Call it
    inside a transaction. Returns the message as it now stands."""
    ids = message.row_ids
    head = message.body_for(ids[:keep], message.prior_attempts)
    send_batch(cursor, [message.body_for(ids[keep:], message.attempts - 1)])
    cursor.execute(query("shrink"), [json.dumps(head), message.msg_id])
    return Message(message.msg_id, message.read_ct, head, message.vt)


def next_visible_in(cursor: Any, but: Iterable[int] = ()) -> float | None:
    """Seconds until the next hidden message becomes visible (None: the queue is empty),
    leaving out the messages ``but`` names."""
    cursor.execute(query("next_visible_in"), [list(but)])
    row = cursor.fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


def lookup(cursor: Any, msg_ids: list[int]) -> dict[int, Message]:
    """Messages by id, straight from the queue table (for jobs posted to the endpoint)."""
    if not msg_ids:
        return {}
    cursor.execute(query("lookup"), [msg_ids])
    return {m.msg_id: m for m in map(Message.from_row, cursor.fetchall())}


class Depth(NamedTuple):
    """How deep the queue is, and how long its jobs have waited (fractional seconds; None:
    no such job)."""

    messages: int
    oldest: float | None
    oldest_write: float | None  # of the jobs writes queued: no backfill's
    held: int  # messages a Batch API batch holds


def depth(cursor: Any) -> Depth:
    cursor.execute(query("depth"))
    count, oldest, oldest_write, held = cursor.fetchone()
    return Depth(int(count), _seconds(oldest), _seconds(oldest_write), int(held))


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


# The channel the triggers notify and workers listen on.
CHANNEL = "autoembed"


def notify(cursor: Any) -> None:
    """Wake the listening workers (jobs were handed back or sent on)."""
    cursor.execute(sqlfiles.statement("queue.sql", "notify"), [CHANNEL])


def listen(conn: Any) -> None:
    """Make ``conn`` (a connection of its own) hear the channel."""
    conn.execute(sqlfiles.statement("queue.sql", "listen", channel=sql.Identifier(CHANNEL)))


def exists(cursor: Any, queue: str | None = None) -> bool:
    """Whether the queue's table is there (migrate and autoembed_sync create it)."""
    cursor.execute(query("exists"), [tables(queue)["queue"].as_string(None)])
    return bool(cursor.fetchone()[0])
