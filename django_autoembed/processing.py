"""One batch of queue messages: validate, read, embed, write, acknowledge.

Used by the pull worker and by the push endpoint alike. The decisions are
pure and tested on their own: ``FanOut`` (which provider requests to send
and what each answer means) and ``plan_acks`` (which messages to delete,
archive, delay, hand back or resend). ``Processor`` is the thin I/O around
them. No database transaction is open while the provider is called; writes
land only where the row still holds the text that was embedded, so a
concurrent edit (which has queued its own job) is never overwritten by a
stale vector.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.utils.module_loading import import_string
from psycopg import sql

from . import budget as budgets
from . import chunking, providers, queue, settings, splitpool, store, usage
from . import sql as sqlfiles
from .cache import VectorLRU, provider_key
from .chunking import ChunkPlan, plan_chunks
from .declarations import EmbeddingConfig, registry
from .exceptions import ConfigurationError, InvalidValue, ProcessingPaused, ProviderError
from .failures import DeadRow, record
from .pauses import PauseBook
from .providers.base import Answer, Provider, as_matrix, chunk_inputs
from .queue import Message
from .vectors import VectorArray, adapt, precision, vector_type

logger = logging.getLogger(__name__)

# Texts this process embedded lately, per provider/model/dimensions/column type.
recent_vectors = VectorLRU(lambda: settings.current().recent_vectors)

# Seconds before a row the application held locked is tried again (no attempt spent).
BUSY_RETRY_SECONDS = 1


# -- outcomes ----------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one row of one message.

    ``done``: embedded, emptied or gone. ``failed``: may be retried, costs an
    attempt. ``busy``: the application held its lock; retried soon, no attempt.
    ``throttled``: the provider's rate limit; retried after its Retry-After, no
    attempt. ``skipped``: not worked on (not posted, the time budget ran out, or
    the batch paused); handed back, no attempt. ``rejected``: can never work as it
    is (a text over the model's limit, with ``too_long="fail"``); dead-lettered now.
    """

    kind: str
    error: str | None = None
    retry_after: float | None = None


@dataclass
class Row:
    """One row named by a message, with the config it belongs to once validated."""

    message: Message
    raw_pk: Any
    pk: Any = None
    config: EmbeddingConfig | None = None
    outcome: Outcome | None = None


@dataclass
class BatchResult:
    completed: list[tuple[int, Any]] = field(default_factory=list)  # (msg_id, id as sent)
    failed: list[tuple[int, Any, str]] = field(default_factory=list)
    embedded: int = 0
    requests: int = 0
    dead: int = 0
    busy: int = 0
    seconds: float = 0.0
    # Providers that answered with vectors in this batch (as providers.pause_key names them).
    answered: set[str] = field(default_factory=set)
    # Providers that refused their configuration or were unavailable, by pause key: the rows
    # they embed were handed back unspent (their outcome is "skipped").
    pauses: dict[str, ProcessingPaused] = field(default_factory=dict)
    # Rows handed back unspent (a paused provider, the time budget, not posted).
    held: int = 0
    # Seconds until the rows put back for a rate limit are due again (0: none were).
    throttled_wait: float = 0.0


# -- the acknowledgement plan (pure) -------------------------------------------------


@dataclass
class AckPlan:
    """What to do with each message once its rows' outcomes are known."""

    delete: list[int] = field(default_factory=list)
    archive: list[int] = field(default_factory=list)
    delay: dict[int, list[int]] = field(
        default_factory=dict
    )  # seconds -> messages; the next read counts
    release: list[int] = field(default_factory=list)  # handed back now, this read not counted
    resend: list[tuple[dict[str, Any], int]] = field(
        default_factory=list
    )  # (body, delay) for some rows
    dead: list[DeadRow] = field(default_factory=list)


def retry_delay(
    attempts: int, hints: Iterable[float | None], *, backoff: float, backoff_max: float
) -> int:
    """Seconds before a failed job's next attempt: exponential, capped, never before Retry-After."""
    delay = min(backoff * 2 ** max(0, attempts - 1), backoff_max)
    return int(max([delay, *(h for h in hints if h)]) + 0.999)


def plan_acks(
    messages: Sequence[Message],
    rows: Sequence[Row],
    *,
    max_attempts: int,
    backoff: float,
    backoff_max: float,
    busy_retry: int = BUSY_RETRY_SECONDS,
) -> AckPlan:
    """Delete, archive, delay, hand back or split each message by its rows' outcomes.

    A message whose rows all fail waits for its next attempt as it is; one whose
    rows fared differently is deleted and its unfinished rows are sent again as
    new messages that carry the attempts they have used. Rows that were busy or
    skipped spend no attempt.
    """
    plan = AckPlan()
    by_message: dict[int, list[Row]] = {}
    for row in rows:
        by_message.setdefault(id(row.message), []).append(row)
    for message in messages:
        mine = by_message.get(id(message), [])
        kinds = {r.outcome.kind if r.outcome else "skipped" for r in mine}
        if kinds <= {"done"} and mine:
            plan.delete.append(message.msg_id)
            continue
        if kinds == {"skipped"} or not mine:
            plan.release.append(message.msg_id)
            continue
        failed = [r for r in mine if r.outcome and r.outcome.kind == "failed"]
        attempts = message.attempts  # this read included
        rejected = [r for r in mine if r.outcome and r.outcome.kind == "rejected"]
        doomed = rejected + (failed if attempts >= max_attempts else [])
        retry = [r for r in failed if r not in doomed]
        delay = retry_delay(
            attempts,
            (r.outcome.retry_after for r in failed if r.outcome),
            backoff=backoff,
            backoff_max=backoff_max,
        )
        if retry and len(retry) == len(
            mine
        ):  # the next read of this message counts the next attempt
            plan.delay.setdefault(delay, []).append(message.msg_id)
            continue
        for row in doomed:
            target = message.target
            plan.dead.append(
                DeadRow(
                    config=row.config.label if row.config else "unknown",
                    table=row.config.table if row.config else (target.table if target else ""),
                    row_id=row.raw_pk,
                    job=message.body_for([row.raw_pk], 0)
                    if isinstance(message.body, dict)
                    else {"body": message.body},
                    error=(row.outcome.error if row.outcome else None) or "failed",
                    attempts=attempts,
                )
            )
        if retry:
            plan.resend.append((message.body_for([r.raw_pk for r in retry], attempts), delay))
        busy = [r.raw_pk for r in mine if r.outcome and r.outcome.kind == "busy"]
        if busy:  # a row locked by the application is no failure: this read does not count
            plan.resend.append((message.body_for(busy, attempts - 1), busy_retry))
        throttled = [r for r in mine if r.outcome and r.outcome.kind == "throttled"]
        if throttled:  # nor is a rate limit: wait as the provider asks, spend nothing
            wait = retry_delay(
                1,
                (r.outcome.retry_after for r in throttled if r.outcome),
                backoff=backoff,
                backoff_max=backoff_max,
            )
            plan.resend.append(
                (message.body_for([r.raw_pk for r in throttled], attempts - 1), wait)
            )
        skipped = [r.raw_pk for r in mine if r.outcome is None or r.outcome.kind == "skipped"]
        if skipped:
            plan.resend.append((message.body_for(skipped, attempts - 1), 0))
        (plan.archive if doomed else plan.delete).append(message.msg_id)
    return plan


def apply_acks(cursor: Any, plan: AckPlan) -> None:
    """Carry out a plan with the cursor of the transaction that wrote the vectors."""
    queue.delete(cursor, plan.delete)
    queue.archive(cursor, plan.archive)
    queue.release(cursor, plan.release)
    for seconds, ids in plan.delay.items():
        queue.set_vt(cursor, ids, seconds)
    for body, seconds in plan.resend:
        queue.send_batch(cursor, [body], seconds)
    record(cursor, plan.dead)


# -- the provider fan-out (pure) -----------------------------------------------------


class FanOut:
    """Which provider requests to send for a list of unique texts, and what each answer means.

    Slices of the texts become requests. A request refused for its input is
    split in halves until the bad input stands alone, so one poison text fails
    only itself. A configuration error (bad key, unknown model, wrong
    dimensions) stops everything: ``config_error`` is set and nothing more is
    sent. When every request failed for a passing reason (rate limits, server
    errors, timeouts) and none got through, the provider is ``unavailable``:
    the rows are not to blame. No I/O here; ``Processor`` sends the requests.
    """

    def __init__(
        self,
        texts: Sequence[str],
        slices: Iterable[tuple[int, int]],
        *,
        dimensions: int,
        provider: str,
        column_type: str,
    ) -> None:
        self.texts = texts
        self.dimensions = dimensions
        self.provider = provider
        self.column_type = column_type
        self.limit = float(np.finfo(precision(column_type)).max)
        self.todo: list[tuple[int, int]] = list(slices)
        self.vectors: list[np.ndarray | None] = [None] * len(texts)
        self.errors: dict[int, ProviderError] = {}
        self.skipped: set[int] = set()  # never sent: the time budget ran out first
        self.config_error: ProviderError | None = None
        self.requests = 0
        self.answers = 0  # requests the provider answered with vectors
        self.billed = 0  # tokens the provider said it billed for them
        self.unbilled: list[tuple[int, int]] = []  # answered slices whose usage was not said
        self.answered_inputs = 0

    def take(self) -> list[tuple[int, int]]:
        """Slices to send now (none once a configuration error was seen)."""
        out, self.todo = ([] if self.config_error else self.todo), []
        return out

    def answered(self, lo: int, hi: int, answer: Any) -> None:
        """Record the provider's answer for ``texts[lo:hi]``: vectors, or the exception raised."""
        self.requests += 1
        if isinstance(answer, BaseException):
            self._failed(lo, hi, answer)
            return
        vectors, tokens = (
            (answer.vectors, answer.tokens)
            if isinstance(answer, Answer)
            else (
                answer,
                None,
            )
        )
        try:
            matrix = as_matrix(vectors, hi - lo, self.dimensions, self.provider)
        except ProviderError as exc:
            self._failed(lo, hi, exc)
            return
        self.answers += 1
        self.answered_inputs += hi - lo
        if tokens is None:
            self.unbilled.append((lo, hi))
        else:
            self.billed += tokens
        for i, vector in enumerate(matrix):
            self.vectors[lo + i] = vector
        # NaN, infinities or values past halfvec's range: pgvector would refuse the
        # whole UPDATE, so such a text fails alone, here.
        for bad in np.flatnonzero(~(np.abs(matrix) <= self.limit).all(axis=1)):
            self.errors[lo + int(bad)] = ProviderError(
                f"Provider {self.provider!r} returned a vector with NaN, infinite or out-of-range "
                "values "
                f"(beyond ±{self.limit:g} for a {self.column_type} column); pgvector cannot store "
                "it. "
                "Check the provider or model for this input.",
                kind="input",
            )

    @property
    def unavailable(self) -> ProviderError | None:
        """The error that shows the provider down or saturated: every request failed in passing."""
        if self.answers or not self.errors or self.config_error:
            return None
        errors = list(self.errors.values())
        if not all(e.kind in ("transient", "throttled") for e in errors):
            return None
        return max(errors, key=lambda e: e.retry_after or 0)

    def expired(self, slices: Iterable[tuple[int, int]]) -> None:
        """The time budget ran out before these slices were sent: they are handed back unspent."""
        for lo, hi in slices:
            self.skipped.update(range(lo, hi))

    def _failed(self, lo: int, hi: int, exc: BaseException) -> None:
        if not isinstance(exc, ProviderError):  # a custom provider's own exception
            exc = ProviderError(f"provider {self.provider!r} failed: {exc!r}")
        if exc.kind == "config":
            self.config_error = self.config_error or exc
        elif exc.kind == "input" and hi - lo > 1:
            mid = (lo + hi) // 2
            self.todo += [(lo, mid), (mid, hi)]
        else:
            for i in range(lo, hi):
                self.errors[i] = exc


def send(
    fanout: FanOut,
    call: Callable[[list[str]], Any],
    pool: ThreadPoolExecutor,
    deadline: float | None = None,
    *,
    gate: Callable[[int, int, float | None], bool] | None = None,
    heard: Callable[[Any], None] | None = None,
) -> None:
    """Send a fan-out's requests through ``pool``, as many in flight as the pool has threads.

    ``gate(lo, hi, deadline)`` is asked before each request and may wait (a rate budget);
    False means not now: the slice is handed back unsent. ``heard(answer_or_error)`` sees
    every answer, in this thread.
    """
    futures: dict[Future[Any], tuple[int, int]] = {}
    while True:
        for lo, hi in fanout.take():
            if gate is not None and not gate(lo, hi, deadline):
                fanout.expired([(lo, hi)])
                continue
            futures[pool.submit(call, list(fanout.texts[lo:hi]))] = (lo, hi)
        if not futures:
            return
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = wait(list(futures), timeout=timeout, return_when=FIRST_COMPLETED)
        if not done:  # time budget spent: drop what has not started, wait for the rest
            fanout.expired([futures.pop(f) for f in [f for f in futures if f.cancel()]])
            deadline = None
            continue
        for future in done:
            lo, hi = futures.pop(future)
            try:
                answer = future.result()
            except Exception as exc:
                answer = exc
            if heard is not None:
                heard(answer)
            fanout.answered(lo, hi, answer)
        if fanout.config_error:
            for future in futures:
                future.cancel()
            wait([f for f in futures if not f.cancelled()])
            return


def _replan(
    cur: Any,
    target: Resolved,
    pks: list[Any],
    ready: dict[Any, ChunkPlan],
    embedded: Embedded,
) -> tuple[dict[Any, ChunkPlan], set[Any]]:
    """Each locked row's plan made again from its chunks as stored now; and the rows to try
    again soon, no attempt spent: those whose new plan needs a text this batch has no vector
    for, and those with a chunk another transaction holds (deleting the row: Django deletes
    its chunks first, and waiting for them would deadlock with it)."""
    stored: dict[Any, list[tuple[int, int, str]]] = {}
    locked: set[int] = set()
    if pks:
        cur.execute(target.query("read_chunks"), [pks])
        for chunk_id, parent, number, text in cur.fetchall():
            stored.setdefault(parent, []).append((chunk_id, number, text))
        cur.execute(target.query("lock_chunks"), [pks])
        locked = {r[0] for r in cur.fetchall()}
    plans: dict[Any, ChunkPlan] = {}
    stale: set[Any] = set()
    for pk in pks:
        mine = stored.get(pk, [])
        plan = plan_chunks(mine, ready[pk].texts)
        held = any(chunk_id not in locked for chunk_id, _, _ in mine)
        if not held and all(embedded.vectors.get(text) is not None for _, text in plan.add):
            plans[pk] = plan
        else:
            stale.add(pk)
    return plans, stale


def _vector(embedded: Embedded, text: str) -> np.ndarray:
    vector = embedded.vectors[text]
    assert vector is not None, "a chunk without a vector is not written"
    return vector


@dataclass
class Embedded:
    """What a batch got for its unique texts, by text."""

    vectors: dict[str, np.ndarray | None] = field(default_factory=dict)
    errors: dict[str, ProviderError] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)  # never sent: the time budget ran out
    too_long: dict[str, int] = field(default_factory=dict)  # over the per-input limit: tokens
    fanout: FanOut = field(
        default_factory=lambda: FanOut([], [], dimensions=0, provider="", column_type="vector")
    )


# -- one config, resolved once per batch --------------------------------------------


@dataclass
class Resolved:
    """A config's names, column type and provider, looked up once for a batch."""

    config: EmbeddingConfig
    schema: str
    names: dict[str, sql.Composable]
    column_type: str
    provider: Provider

    def query(self, key: str) -> sql.Composed:
        return sql.SQL(sqlfiles.section("processing.sql", key)).format(**self.names)


@dataclass
class Wanted:
    """The texts one config's messages need that no process has a vector for yet."""

    target: Resolved
    messages: list[Message]
    inputs: list[tuple[bytes, str]]  # (the vector store's key of the text, what to send)


class Processor:
    """Processes messages on one database alias.

    ``pool`` is the thread pool that sends provider requests (a worker's lanes
    share one); without it each batch makes its own, ``max_requests`` wide.
    """

    def __init__(
        self,
        *,
        using: str = "default",
        batch_size: int | None = None,
        max_requests: int | None = None,
        pool: ThreadPoolExecutor | None = None,
        charge_outages: bool = False,
        max_wait: float | None = None,
        stopping: Callable[[], bool] | None = None,
        pauses: PauseBook | None = None,
    ) -> None:
        self.using = using
        # Which providers are paused, and for how long (a worker's lanes share one book).
        self.pauses = pauses or PauseBook(using, fixed=0.0)
        # Whether a batch whose every request failed in passing spends its rows' attempts
        # (True), or is handed back unspent as an outage (False, the default).
        self.charge_outages = charge_outages
        self.batch_size = int(batch_size or settings.current().batch_size)
        self.max_requests = int(max_requests or settings.current().max_requests)
        self.pool = pool
        # Seconds a request may wait for the rate budget before its rows go back unspent
        # (the jobs stay hidden for the visibility timeout: half of it by default).
        self.max_wait = (
            float(max_wait)
            if max_wait is not None
            else float(settings.current().visibility_timeout) / 2
        )
        # Whether the process is stopping: a request waiting for the rate budget is not sent.
        self.stopping = stopping
        self._schemas: dict[str, str | None] = {}

    # -- entry point ----------------------------------------------------------

    def process(
        self,
        messages: list[Message],
        *,
        deadline: float | None = None,
        rows_for: Callable[[Message], Iterable[Any]] | None = None,
    ) -> BatchResult:
        """Work on ``messages``; ``rows_for`` limits a message to some of its rows (posted jobs).

        A provider that refuses its configuration, or whose every request failed in
        passing (an outage), is paused in ``self.pauses``: the messages of the configs it
        embeds go back to the queue without costing an attempt, hidden for the pause,
        and the other configs' messages are worked on as usual. ``result.pauses`` says
        which providers were paused.
        """
        started = time.monotonic()
        result = BatchResult()
        rows = [row for m in messages for row in self._expand(m, rows_for)]
        groups: dict[str, tuple[EmbeddingConfig, list[Row]]] = {}
        for row in rows:
            if row.outcome is None and row.config is not None:
                groups.setdefault(row.config.label, (row.config, []))[1].append(row)
        acked: set[int] = set()
        for config, group in groups.values():
            mine = {id(r.message) for r in group}
            siblings = [r for r in rows if id(r.message) in mine]
            key = providers.pause_key(config)
            wait = self.pauses.paused_for(key)
            try:
                if wait > 0:  # paused earlier: not worth a request before it is due
                    self._hand_back(siblings, wait, "paused: the provider is paused")
                else:
                    run = self._run_chunked if config.chunked else self._run_config
                    run(self._resolve_or_pause(config, key), group, siblings, result, deadline)
            except ProcessingPaused as paused:
                result.pauses[key] = paused
                self._hand_back(siblings, self.pauses.pause(key, paused), f"paused: {paused}")
            acked |= mine
        unmatched = [m for m in messages if id(m) not in acked]
        if unmatched:
            ids = {id(m) for m in unmatched}
            with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
                plan = self._plan(unmatched, [r for r in rows if id(r.message) in ids])
                apply_acks(cursor, plan)
            result.dead += len(plan.dead)
        for row in rows:
            assert row.outcome is not None
            if row.outcome.kind == "done":
                result.completed.append((row.message.msg_id, row.raw_pk))
            else:
                result.failed.append(
                    (row.message.msg_id, row.raw_pk, row.outcome.error or row.outcome.kind)
                )
                result.busy += row.outcome.kind == "busy"
                result.held += row.outcome.kind == "skipped"
                if row.outcome.kind == "throttled":
                    result.throttled_wait = max(
                        result.throttled_wait, row.outcome.retry_after or 1.0
                    )
        self.pauses.answered(result.answered)
        result.seconds = time.monotonic() - started
        return result

    def _resolve_or_pause(self, config: EmbeddingConfig, key: str) -> Resolved:
        """The config resolved; a provider that cannot even start (no key, a provider's
        package missing) pauses that provider only, as a refused key does."""
        try:
            return self._resolve(config)
        except ConfigurationError as exc:
            raise ProcessingPaused(ProviderError(str(exc), kind="config"), provider=key) from exc

    def _hand_back(self, rows: list[Row], delay: float, why: str) -> None:
        """Give rows' messages back unspent, hidden for ``delay`` seconds (a paused provider)."""
        held = list({id(r.message): r.message for r in rows}.values())
        with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
            queue.release(cursor, [m.msg_id for m in held], delay)
        for row in rows:
            row.outcome = Outcome("skipped", why)

    # -- validation -----------------------------------------------------------

    def _expand(
        self, message: Message, rows_for: Callable[[Message], Iterable[Any]] | None
    ) -> list[Row]:
        if message.problem:
            return [Row(message, None, outcome=Outcome("failed", message.problem))]
        assert message.target is not None
        config, error = self._match(message.target)
        wanted = None if rows_for is None else {str(i) for i in rows_for(message)}
        out = []
        for raw in message.row_ids:
            row = Row(message, raw, config=config)
            if wanted is not None and str(raw) not in wanted:
                row.outcome = Outcome("skipped")
            elif config is None:
                row.outcome = Outcome("failed", error)
            else:
                try:
                    row.pk = config.model_class._meta.pk.to_python(raw)
                except (ValidationError, ValueError, TypeError):
                    row.outcome = Outcome(
                        "failed", f"id {raw!r} is not a valid key for {config.table}"
                    )
            out.append(row)
        return out

    def _match(self, target: queue.Target) -> tuple[EmbeddingConfig | None, str]:
        config = registry.match(target.table, target.function, target.column)
        if config is None or self._schema_of(config) != target.schema:
            return None, (
                f"no declared embedding matches {target.schema}.{target.table} "
                f"(contentFunction {target.function!r}, embeddingColumn {target.column!r}); "
                "deploy the code that declares it, or delete the job"
            )
        return config, ""

    def _schema_of(self, config: EmbeddingConfig) -> str | None:
        if config.table not in self._schemas:
            with connections[self.using].cursor() as cursor:
                cursor.execute(
                    sqlfiles.section("processing.sql", "table_schema"),
                    [sql.Identifier(config.table).as_string(None)],
                )
                row = cursor.fetchone()
            self._schemas[config.table] = row[0] if row else None
        return self._schemas[config.table]

    def _resolve(self, config: EmbeddingConfig) -> Resolved:
        schema = self._schema_of(config) or "public"
        names: dict[str, sql.Composable] = {
            "table": sql.Identifier(schema, config.table),
            "pk": sql.Identifier(config.pk_column),
            "pktype": sql.SQL(config.model_class._meta.pk.rel_db_type(connections[self.using])),
            "fn": sql.Identifier(schema, config.function_name),
            "col": sql.Identifier(config.column),
            "vectype": sql.SQL(vector_type(config)),
        }
        if config.chunked:
            names.update(
                chunks=sql.Identifier(schema, config.chunk_table),
                ccol=sql.Identifier(config.column),
                cvectype=sql.SQL(vector_type(config)),
            )
        return Resolved(config, schema, names, vector_type(config), providers.for_config(config))

    # -- one config: read, embed, write ---------------------------------------

    def _run_config(
        self,
        target: Resolved,
        rows: list[Row],
        acked: list[Row],
        result: BatchResult,
        deadline: float | None,
    ) -> None:
        pks = list({row.pk: None for row in rows})
        contents, broken = self._read(target, pks)
        raw = self._raw()
        if not raw.autocommit and not connections[self.using].in_atomic_block:
            raw.commit()  # no transaction stays open across the API calls below

        texts = sorted({t for t in contents.values() if t})
        embedded = self._embed(target, texts, deadline)
        result.requests += embedded.fanout.requests
        if embedded.fanout.answers:
            result.answered.add(providers.pause_key(target.config))
        errors, skipped = embedded.errors, embedded.skipped

        writes: dict[Any, tuple[str, np.ndarray | None]] = {}
        for row in rows:
            if row.pk in broken:
                row.outcome = Outcome("failed", broken[row.pk])
                continue
            if row.pk not in contents:
                row.outcome = Outcome("done")  # row deleted: nothing to embed, no retry
                continue
            text = contents[row.pk]
            if text in embedded.too_long:
                self._too_long(target, row, embedded.too_long[text])
            if text and text in skipped:
                row.outcome = Outcome(
                    "skipped", "time budget spent before this row was sent; queued again"
                )
            elif text and text in errors:
                err = errors[text]
                kind = "throttled" if err.kind == "throttled" else "failed"
                if text in embedded.too_long and target.config.too_long == "fail":
                    kind = "rejected"
                row.outcome = Outcome(kind, str(err), err.retry_after)
            else:
                writes[row.pk] = (text, embedded.vectors.get(text) if text else None)

        messages = list({id(r.message): r.message for r in acked}.values())
        with transaction.atomic(using=self.using):
            written, busy = self._write(target, writes)
            result.embedded += len(written)
            for row in rows:
                if row.outcome is None:
                    row.outcome = Outcome("busy") if row.pk in busy else Outcome("done")
            plan = self._plan(messages, acked)
            with connections[self.using].cursor() as cursor:
                apply_acks(cursor, plan)
            result.dead += len(plan.dead)

    # -- a chunked config: split, embed the chunks whose text is new, replace ---------------

    def _run_chunked(
        self,
        target: Resolved,
        rows: list[Row],
        acked: list[Row],
        result: BatchResult,
        deadline: float | None,
    ) -> None:
        pks = list({row.pk: None for row in rows})
        contents, broken = self._read(target, pks)
        plans, unsplit = self._chunk_plans(target, pks, contents)
        raw = self._raw()
        if not raw.autocommit and not connections[self.using].in_atomic_block:
            raw.commit()  # no transaction stays open across the API calls below

        new_texts = sorted({t for plan in plans.values() for _, t in plan.add})
        embedded = self._embed(target, new_texts, deadline)
        result.requests += embedded.fanout.requests
        if embedded.fanout.answers:
            result.answered.add(providers.pause_key(target.config))

        ready: dict[Any, ChunkPlan] = {}
        for row in rows:
            if row.pk in broken:
                row.outcome = Outcome("failed", broken[row.pk])
            elif row.pk not in contents:
                row.outcome = Outcome("done")  # row deleted: its chunks went with it
            elif contents[row.pk] in unsplit:  # its stored chunks stay as they are
                row.outcome = Outcome("failed", unsplit[contents[row.pk]])
            else:
                plan = plans[row.pk]
                texts = [t for _, t in plan.add]
                errors = [embedded.errors[t] for t in texts if t in embedded.errors]
                if any(t in embedded.skipped for t in texts):
                    row.outcome = Outcome("skipped", "time budget spent before this row was sent")
                elif errors:  # all of a text version's chunks, or none of them
                    kind = "throttled" if all(e.kind == "throttled" for e in errors) else "failed"
                    row.outcome = Outcome(
                        kind, f"a chunk failed: {errors[0]}", errors[0].retry_after
                    )
                else:
                    ready[row.pk] = plan

        messages = list({id(r.message): r.message for r in acked}.values())
        with transaction.atomic(using=self.using):
            _written, busy, chunks = self._write_chunks(target, ready, contents, embedded)
            result.embedded += chunks
            for row in rows:
                if row.outcome is None:
                    row.outcome = Outcome("busy") if row.pk in busy else Outcome("done")
            acks = self._plan(messages, acked)
            with connections[self.using].cursor() as cursor:
                apply_acks(cursor, acks)
            result.dead += len(acks.dead)

    def _chunk_plans(
        self, target: Resolved, pks: list[Any], contents: dict[Any, str]
    ) -> tuple[dict[Any, ChunkPlan], dict[str, str]]:
        """Per row, which of its stored chunks stay, move or go, and which texts are new;
        and, by text, why a custom splitter could not split it (those rows get no plan)."""
        stored: dict[Any, list[tuple[int, int, str]]] = {}
        with psycopg.Cursor(self._raw()) as cur:
            cur.execute(target.query("read_chunks"), [pks])
            for chunk_id, parent, number, text in cur.fetchall():
                stored.setdefault(parent, []).append((chunk_id, number, text))
        texts = [text for text in set(contents.values()) if text]
        unsplit: dict[str, str] = {}
        if target.config.splitter:  # the user's code: it runs here, where Django is set up
            splits = {}
            for text in texts:
                try:
                    splits[text] = self._split(target, text)
                except Exception as exc:  # one text it cannot split fails its rows, not the batch
                    unsplit[text] = (
                        f"the splitter {target.config.splitter} failed: {exc!r}. Fix it (it "
                        "must return a list of strings, with no NUL characters); the row is "
                        "retried, and dead-lettered once its attempts are spent."
                    )
        else:
            splits = splitpool.split_all(
                texts,
                size=self._chunk_size(target),
                overlap=target.config.chunk_overlap,
                tokenizer=target.provider.process_tokenizer(),
                joins_at_spaces=target.provider.splits_at_spaces(),
                here=lambda text: self._split(target, text),
            )
        plans = {
            pk: plan_chunks(stored.get(pk, []), splits.get(text, []))
            for pk, text in contents.items()
            if text not in unsplit
        }
        return plans, unsplit

    @staticmethod
    def _chunk_size(target: Resolved) -> int:
        return min(int(target.config.chunk_tokens or 0), target.provider.max_input_tokens)

    def _split(self, target: Resolved, text: str) -> list[str]:
        config, provider = target.config, target.provider
        size = self._chunk_size(target)
        if config.splitter:
            chunks = import_string(config.splitter)(
                text, size, config.chunk_overlap, provider.count_tokens
            )
            if isinstance(chunks, str) or not isinstance(chunks, Iterable):
                raise InvalidValue(f"it returned {type(chunks).__name__}, not a list of strings")
            chunks = list(chunks)
            for c in chunks:
                if not isinstance(c, str):
                    raise InvalidValue(f"it returned a {type(c).__name__} among the chunks")
                if "\x00" in c:  # Postgres's text cannot hold NUL
                    raise InvalidValue("a chunk holds a NUL character")
                c.encode()  # a lone surrogate: UnicodeEncodeError, with its position
            return [c for c in chunks if c.strip()]
        return chunking.split(
            text,
            size=size,
            overlap=config.chunk_overlap,
            count=provider.count_tokens,
            cut=provider.head,
            joins_at_spaces=provider.splits_at_spaces(),
        )

    def _write_chunks(
        self,
        target: Resolved,
        ready: dict[Any, ChunkPlan],
        contents: dict[Any, str],
        embedded: Embedded,
    ) -> tuple[set[Any], set[Any], int]:
        """Replace each ready row's chunks at once, only while it holds the text they came
        from. Returns (written rows, busy rows, chunks inserted)."""
        if not ready:
            return set(), set(), 0
        raw = self._raw()
        adapt(raw)
        pks = list(ready)
        with psycopg.Cursor(raw) as cur:
            cur.execute(target.query("lock_rows"), [pks])
            locked = [r[0] for r in cur.fetchall()]
            busy: set[Any] = set()
            if set(pks) - set(locked):
                cur.execute(target.query("existing_rows"), [list(set(pks) - set(locked))])
                busy = {r[0] for r in cur.fetchall()}
            if not locked:
                return set(), busy, 0
            cur.execute(target.query("current_rows"), [locked, [contents[pk] for pk in locked]])
            current = [r[0] for r in cur.fetchall()]  # the others changed: their new text is queued
            # Planned again under the row locks, against what is stored now: another lane
            # may have written this text's chunks since they were read (they were stored
            # twice when two lanes met).
            plans, stale = _replan(cur, target, current, ready, embedded)
            busy |= stale
            cur.execute(target.query("drop_chunks"), [[i for p in plans.values() for i in p.drop]])
            kept = [(i, n) for p in plans.values() for i, n in p.keep.items()]
            cur.execute(
                target.query("renumber_chunks"), [[i for i, _ in kept], [n for _, n in kept]]
            )
            added = [(pk, n, t) for pk, plan in plans.items() for n, t in plan.add]
            if added:
                matrix = np.stack([_vector(embedded, t) for _, _, t in added])
                cur.execute(
                    target.query("insert_chunks"),
                    [
                        [a[0] for a in added],
                        [a[1] for a in added],
                        [a[2] for a in added],
                        VectorArray(matrix, 0, target.column_type),
                    ],
                )
            return set(plans), busy, len(added)

    @staticmethod
    def _too_long(target: Resolved, row: Row, tokens: int) -> None:
        provider, config = target.provider, target.config
        if config.too_long == "fail":
            return  # the row is dead-lettered with the reason; no need to say it twice
        logger.warning(
            "%s pk=%s: its text is %d tokens, over the %d a %s input may hold; the vector is of "
            "the first %d tokens. Declare chunk_tokens=... to embed all of it in chunks, or "
            "too_long='fail' to refuse such rows.",
            config.label,
            row.raw_pk,
            tokens,
            provider.max_input_tokens,
            provider.model,
            provider.max_input_tokens,
            extra={
                "config": config.label,
                "pk": str(row.raw_pk),
                "tokens": tokens,
                "limit": provider.max_input_tokens,
            },
        )

    def _read(self, target: Resolved, pks: list[Any]) -> tuple[dict[Any, str], dict[Any, str]]:
        """The text of each row, and why it could not be had for the rows whose content
        function failed (one bad row must not stop its batch: it fails alone)."""
        raw = self._raw()
        query = target.query("read_texts")
        try:
            with transaction.atomic(using=self.using), psycopg.Cursor(raw) as cur:
                cur.execute(query, [pks])
                return dict(cur.fetchall()), {}
        except psycopg.Error:
            pass
        contents: dict[Any, str] = {}
        broken: dict[Any, str] = {}
        for pk in pks:
            try:
                with transaction.atomic(using=self.using), psycopg.Cursor(raw) as cur:
                    cur.execute(query, [[pk]])
                    contents.update(cur.fetchall())
            except psycopg.Error as exc:
                broken[pk] = (
                    f"content function {target.config.function_name} failed for this row: "
                    f"{str(exc).strip().splitlines()[0]}"
                )
        return contents, broken

    def _plan(self, messages: list[Message], rows: list[Row]) -> AckPlan:
        return plan_acks(
            messages,
            rows,
            max_attempts=int(settings.current().max_attempts),
            backoff=float(settings.current().retry_backoff),
            backoff_max=float(settings.current().retry_backoff_max),
        )

    def _raw(self) -> Any:
        connection = connections[self.using]
        connection.ensure_connection()
        return connection.connection

    def _embed(self, target: Resolved, texts: list[str], deadline: float | None) -> Embedded:
        """Vectors for unique texts: recently embedded ones from memory, the rest from the provider.

        A row queued twice (edited again before the worker read it), or put back
        because the application held its lock, comes back with a text embedded
        moments ago; its vector is reused instead of paying for it again. A text over
        the model's per-input limit is cut at the limit or refused, as the config says,
        before any request.
        """
        config, provider = target.config, target.provider
        out = Embedded()
        inputs = self._inputs(target, texts, out)
        stored = precision(target.column_type)  # what the column keeps anyway
        keys, kept_keys, known, missing = self._known(target, inputs)
        out.fanout = self._call_provider(target, [inputs[t] for t in missing], deadline)
        fanout = out.fanout
        out.vectors = {t: known.get(keys[t]) for t in inputs}
        out.skipped = {missing[n] for n in fanout.skipped}
        remember = []
        for n, text in enumerate(missing):
            vector = fanout.vectors[n]
            out.vectors[text] = vector
            if n in fanout.errors:
                out.errors[text] = fanout.errors[n]
            elif vector is not None:
                remember.append((text, vector.astype(stored)))
        recent_vectors.put_many([(keys[t], v) for t, v in remember])
        if store.enabled():
            store.put_many(self.using, [(kept_keys[t], v) for t, v in remember], stored)
        if fanout.answers:
            unbilled = sum(
                provider.count_tokens(t) for lo, hi in fanout.unbilled for t in fanout.texts[lo:hi]
            )
            usage.record(
                self.using,
                config.label,
                provider.model,
                requests=fanout.answers,
                inputs=fanout.answered_inputs,
                tokens=fanout.billed + unbilled,
            )
        return out

    def _inputs(self, target: Resolved, texts: Iterable[str], out: Embedded) -> dict[str, str]:
        """What to send for each text: itself, or its start when it is over the per-input limit
        and the config truncates (``out`` learns of the long ones, and of those refused)."""
        config, provider = target.config, target.provider
        limit = provider.max_input_tokens
        inputs: dict[str, str] = {}
        for text in texts:
            tokens = provider.over_limit(text)
            if tokens is None:
                inputs[text] = text
                continue
            out.too_long[text] = tokens
            if config.too_long == "fail":
                out.errors[text] = ProviderError(
                    f"The text is {tokens} tokens, over the {limit} tokens a {provider.name} "
                    f"{provider.model} input may hold. Shorten it, or declare the config with "
                    "too_long='truncate' or chunk_tokens=... to embed it in chunks.",
                    kind="input",
                )
            else:
                inputs[text] = provider.head(text, limit)
        return inputs

    def _known(
        self, target: Resolved, inputs: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, bytes], dict[Any, np.ndarray], list[str]]:
        """(memory keys, store keys, the vectors known by memory key, the texts not known):
        this process's recent vectors first, then those any process kept (or a batch brought)."""
        stored = precision(target.column_type)
        scope = (*provider_key(target.config), target.column_type)
        keys = {t: (*scope, hashlib.blake2b(t.encode(), digest_size=16).digest()) for t in inputs}
        known = recent_vectors.get_many(keys.values())
        missing = [t for t in inputs if keys[t] not in known]
        kept_keys = {t: store.key(scope, t) for t in missing}
        kept = store.get_many(self.using, kept_keys.values(), stored)
        if kept:
            found = [(keys[t], kept[kept_keys[t]]) for t in missing if kept_keys[t] in kept]
            recent_vectors.put_many(found)
            known.update(found)
            missing = [t for t in missing if kept_keys[t] not in kept]
        return keys, kept_keys, known, missing

    def wanted(
        self, messages: list[Message], *, now: Iterable[int] = (), direct: Iterable[bytes] = ()
    ) -> tuple[list[Wanted], list[Message]]:
        """Split messages for the Batch API: per config, the messages whose rows need texts no
        process has a vector for, with those texts; and the messages to process now (their
        texts are known, they match no config, or their ids are in ``now``: those go through
        the embeddings API, and a text they will embed is no reason to wait for a batch; so
        do the texts whose store key is in ``direct``, which a batch failed on). Writes
        nothing."""
        direct_keys = set(direct)
        direct_ids = set(now)
        rows = [row for m in messages for row in self._expand(m, None)]
        groups: dict[str, tuple[EmbeddingConfig, list[Row]]] = {}
        for row in rows:
            if row.outcome is None and row.config is not None:
                groups.setdefault(row.config.label, (row.config, []))[1].append(row)
        out: list[Wanted] = []
        waiting: set[int] = set()
        for config, group in groups.values():
            target = self._resolve(config)
            pks = list({row.pk: None for row in group})
            contents, _broken = self._read(target, pks)
            if config.chunked:
                plans, _unsplit = self._chunk_plans(target, pks, contents)
                needs = {pk: [t for _, t in plan.add] for pk, plan in plans.items()}
            else:
                needs = {pk: [text] for pk, text in contents.items() if text}
            texts = sorted({t for ts in needs.values() for t in ts})
            inputs = self._inputs(target, texts, Embedded())
            _, kept_keys, _, missing = self._known(target, inputs)
            unknown = set(missing) - {
                t for r in group if r.message.msg_id in direct_ids for t in needs.get(r.pk, ())
            }
            unknown = {t for t in unknown if kept_keys[t] not in direct_keys}
            later = {
                id(r.message)
                for r in group
                if r.message.msg_id not in direct_ids and unknown & set(needs.get(r.pk, ()))
            }
            if later:
                held = list(
                    {id(r.message): r.message for r in group if id(r.message) in later}.values()
                )
                wanted_texts = sorted(
                    {t for r in group if id(r.message) in later for t in needs.get(r.pk, ())}
                    & unknown
                )
                out.append(Wanted(target, held, [(kept_keys[t], inputs[t]) for t in wanted_texts]))
                waiting |= later
        raw = self._raw()
        if not raw.autocommit and not connections[self.using].in_atomic_block:
            raw.commit()
        return out, [m for m in messages if id(m) not in waiting]

    def _call_provider(self, target: Resolved, inputs: list[str], deadline: float | None) -> FanOut:
        provider = target.provider
        label = providers.label(target.config)
        key = providers.pause_key(target.config)
        budget = budgets.for_provider(self.using, label) if budgets.applies(provider) else None
        max_inputs = max(1, min(self.batch_size, provider.max_inputs))
        max_tokens = provider.max_request_tokens
        estimate: Callable[[str], int] = provider.request_cost
        counts: dict[str, int] = {}
        if inputs and budget is not None and budget.limits:
            # Paced: count exactly what each request costs, and keep every request small
            # enough for the bucket to cover it.
            counts = {t: provider.count_tokens(t) for t in inputs}
            estimate = counts.__getitem__
            max_tokens = int(min(max_tokens, max(1.0, budget.request_tokens or max_tokens)))

        def gate(lo: int, hi: int, deadline: float | None) -> bool:
            assert budget is not None
            wait = (
                self.max_wait
                if deadline is None
                else min(self.max_wait, deadline - time.monotonic())
            )

            def cost() -> float:
                return float(sum(counts.get(t) or provider.count_tokens(t) for t in inputs[lo:hi]))

            return budget.take(cost, max_wait=max(0.0, wait), stop=self.stopping)

        def call(texts: list[str]) -> Answer:
            assert budget is not None
            try:
                answer = provider.request(texts)
            except ProviderError as exc:
                budget.heard(exc.limits, answered=False)
                raise
            except Exception:
                budget.heard(None, answered=False)
                raise
            budget.heard(answer.limits)
            return answer

        def heard(answer: Any) -> None:
            assert budget is not None
            if isinstance(answer, Answer):
                budget.answered(answer.limits)
            elif isinstance(answer, ProviderError) and answer.kind == "throttled":
                budget.throttled(answer.retry_after, answer.limits)

        fanout = FanOut(
            inputs,
            chunk_inputs(inputs, max_inputs=max_inputs, max_tokens=max_tokens, estimate=estimate),
            dimensions=target.config.get_dimensions(),
            provider=provider.name,
            column_type=target.column_type,
        )
        paced = budget is not None and budget.paces
        if inputs:
            with ExitStack() as stack:
                pool = self.pool or stack.enter_context(
                    ThreadPoolExecutor(
                        max_workers=self.max_requests, thread_name_prefix="autoembed"
                    )
                )
                if paced:
                    send(fanout, call, pool, deadline, gate=gate, heard=heard)
                else:
                    send(fanout, provider.request, pool, deadline)
        if fanout.config_error is not None:
            raise ProcessingPaused(fanout.config_error, provider=key)
        outage = fanout.unavailable
        if outage is not None and not self.charge_outages:
            # Every request failed. Rate limits say nothing about the rows; server errors
            # might be about them: if the provider embeds a probe, they are to blame.
            transient = any(e.kind == "transient" for e in fanout.errors.values())
            if not (transient and providers.probe(target.config)):
                raise ProcessingPaused(outage, provider=key, kind="unavailable")
        return fanout

    def _write(
        self, target: Resolved, writes: dict[Any, tuple[str, np.ndarray | None]]
    ) -> tuple[set[Any], set[Any]]:
        """Store vectors where the text is unchanged. Returns (written, busy) keys."""
        if not writes:
            return set(), set()
        raw = self._raw()
        adapt(raw)
        pks = list(writes)
        # A server-side-binding cursor: vectors travel as binary, not as text literals.
        with psycopg.Cursor(raw) as cur:
            # Lock what is free and leave the rest: waiting on rows an application
            # transaction holds is how a bulk_update and the worker deadlock.
            cur.execute(target.query("lock_rows"), [pks])
            locked = [r[0] for r in cur.fetchall()]
            missing = set(pks) - set(locked)
            busy: set[Any] = set()
            if missing:
                cur.execute(target.query("existing_rows"), [list(missing)])
                busy = {r[0] for r in cur.fetchall()}
            if not locked:
                return set(), busy
            # Rows with a vector first, then those whose content is empty (NULL vector).
            rows = [(pk, vector) for pk in locked if (vector := writes[pk][1]) is not None]
            order = [pk for pk, _ in rows] + [pk for pk in locked if writes[pk][1] is None]
            matrix = (
                np.stack([vector for _, vector in rows]) if rows else np.empty((0, 0), np.float32)
            )
            cur.execute(
                target.query("write_vectors"),
                [
                    order,
                    [writes[pk][0] for pk in order],
                    VectorArray(matrix, len(order) - len(rows), target.column_type),
                ],
            )
            return {r[0] for r in cur.fetchall()}, busy
