"""One batch, stage by stage: read → plan → embed → write → acknowledge.

``run_batch`` is what the pull worker's lanes and the push endpoint both call.
``Processor`` orchestrates the stages for one database: it expands messages into
rows (``read``), asks each config's destination what to embed (``destinations``,
``plan``), embeds (``embed``), and writes and acknowledges in one transaction
(``destinations``, ``acks``). No database transaction is open while a provider is
called; writes land only where the row still holds the text that was embedded,
so a concurrent edit (which has queued its own job) is never overwritten by a
stale vector. A provider that refuses its configuration or is down is paused in
the ``PauseBook`` and its configs' jobs go back unspent; the others go on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import ProgrammingError, connections, transaction

from .. import changes, db, failures, identity, providers, queue, settings
from ..declarations import EmbeddingConfig, registry
from ..exceptions import (
    ConfigurationError,
    ErrorKind,
    ModelChanged,
    ProcessingPaused,
    ProviderError,
)
from ..pauses import PauseBook, grants_key
from ..queue import Message
from .acks import AckPlan, Outcome, OutcomeKind, Row, apply_acks, plan_acks
from .destinations import Destination, destination
from .embed import Embedded, Embedder
from .read import expand, read_texts
from .target import Resolved, Targets

logger = logging.getLogger(__name__)

# A config refused for a model change pauses in this process as any pause does, but the
# jobs it reads are hidden for about this many seconds (less if the pause ends sooner,
# times REFUSED_JITTER's random factor): the refusal is this process's
# declaration, and a worker already running the new one (a rolling deploy) takes them
# meanwhile. A `--once` run hides them for the pause (``PauseBook.brief_refusals``): read
# again and again within the run, they would keep it from ending.
REFUSED_HAND_BACK = 3.0
# ... times a random factor from 1 up to this: a hide of one fixed length ends in step with
# the refusing worker's own polls (it polls from the moment it hid them), so it was first to
# read them again, time after time, and a rolling deploy's new worker waited (CI: 60 s).
REFUSED_JITTER = 2.0


@dataclass
class BatchResult:
    """What became of a batch's rows, for the worker's log and the endpoint's answer."""

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

    def count(self, rows: list[Row]) -> None:
        for row in rows:
            if row.kind is OutcomeKind.DONE:
                self.completed.append((row.message.msg_id, row.raw_pk))
                continue
            error = row.outcome.error if row.outcome else None
            self.failed.append((row.message.msg_id, row.raw_pk, error or row.kind))
            self.busy += row.kind is OutcomeKind.BUSY
            self.held += row.kind is OutcomeKind.SKIPPED
            if row.kind is OutcomeKind.THROTTLED and row.outcome is not None:
                wait = row.outcome.retry_after or 1.0
                self.throttled_wait = max(self.throttled_wait, wait)


class Processor:
    """Processes messages on one database alias.

    ``pool`` is the thread pool that sends provider requests (a worker's lanes share one);
    without it each batch makes its own, ``max_requests`` wide. ``charge_outages``: a batch
    whose every request failed in passing spends its rows' attempts (otherwise it is handed
    back unspent as an outage). ``max_wait``: seconds a request may wait for the rate
    budget before its rows go back unspent (half the visibility timeout by default).
    ``stopping()``: whether the process is stopping (a waiting request is then not sent).
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
        current = settings.current()
        self.using = using
        self.pauses = pauses or PauseBook(using, fixed=0.0)
        self.batch_size = int(batch_size or current.batch_size)
        self.targets = Targets(using)
        self.embedder = Embedder(
            using,
            batch_size=self.batch_size,
            max_requests=int(max_requests or current.max_requests),
            pool=pool,
            max_wait=float(max_wait if max_wait is not None else current.visibility_timeout / 2),
            stopping=stopping,
            charge_outages=charge_outages,
        )

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
        embeds go back to the queue without costing an attempt, hidden for the pause, and
        the other configs' messages are worked on as usual.
        """
        started = time.monotonic()
        result = BatchResult()
        rows = [row for m in messages for row in expand(m, self.targets, rows_for)]
        acked: set[int] = set()
        for config, group in by_config(rows).values():
            mine = {id(r.message) for r in group}
            self._run_config(
                config, group, [r for r in rows if id(r.message) in mine], result, deadline
            )
            acked |= mine
        unmatched = [m for m in messages if id(m) not in acked]
        if unmatched:  # malformed jobs, targets nobody declared: failures of their own
            ids = {id(m) for m in unmatched}
            with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
                plan = self._plan(unmatched, [r for r in rows if id(r.message) in ids])
                apply_acks(cursor, plan)
            result.dead += len(plan.dead)
        result.count(rows)
        self.pauses.answered(result.answered)
        result.seconds = time.monotonic() - started
        return result

    # -- one config ---------------------------------------------------------------------

    def _run_config(
        self,
        config: EmbeddingConfig,
        group: list[Row],
        siblings: list[Row],
        result: BatchResult,
        deadline: float | None,
    ) -> None:
        """Read, embed, write and acknowledge one config's rows (``siblings``: every row of
        their messages, which are acknowledged as a whole)."""
        key = providers.pause_key(config)
        wait = self.pauses.paused_for(key)
        refused = self.pauses.paused_for(identity.pause_key(config))
        if refused > wait:  # this process's declaration: another worker's may serve the jobs
            self._hand_back_refused(siblings, refused, "paused: the model changed")
            return
        wait = max(wait, self.pauses.paused_for(grants_key(config)))
        if wait > 0:  # paused earlier: not worth a request before it is due
            self._hand_back(siblings, wait, "paused: the provider or the config is paused")
            return
        try:
            self._verify(config, result)
            target = self._resolve(config, key)
            dest = destination(self.using, target)
            pks = list({row.pk: None for row in group})
            contents, broken = read_texts(self.using, target, pks)
            dest.prepare(contents)
            db.end_read(self.using)  # no transaction stays open across the API calls
            embedded = self.embedder.embed(
                target, sorted({t for ts in dest.needs.values() for t in ts}), deadline
            )
        except ProcessingPaused as paused:
            self._pause(config, paused.provider or key, paused, siblings, result)
            return
        except ModelChanged as exc:  # a model change's shadow, cut over since the jobs were read
            self._changed_meanwhile(config, exc, siblings, result)
            return
        except (ProgrammingError, psycopg.errors.InsufficientPrivilege) as exc:
            self._denied(config, exc, siblings, result)
            return
        result.requests += embedded.requests
        if embedded.answers:
            result.answered.add(key)
        ready = [
            row.pk for row in group if not _judge(row, target, dest, contents, broken, embedded)
        ]
        try:
            self._write_and_acknowledge(dest, group, siblings, ready, contents, embedded, result)
        except ModelChanged as exc:  # re-embedded by another process meanwhile: none written
            self._changed_meanwhile(config, exc, siblings, result)
        except (ProgrammingError, psycopg.errors.InsufficientPrivilege) as exc:
            self._denied(config, exc, siblings, result)  # nothing written, nothing acked
        else:
            if self.pauses.held(grants_key(config)):
                result.answered.add(grants_key(config))  # a pause for a grant is over

    def _denied(
        self,
        config: EmbeddingConfig,
        exc: ProgrammingError | psycopg.errors.InsufficientPrivilege,
        siblings: list[Row],
        result: BatchResult,
    ) -> None:
        """Postgres refused this role a table of the config (a grant missing: a model
        change's new chunk table before `autoembed_grants` ran again): the config pauses,
        its jobs go back unspent, and status says what to run."""
        refused = changes.privilege_refused(exc)
        if refused is None:
            raise exc
        said = refused.diag.message_primary or str(refused).strip()
        error = ProviderError(
            f"{config.label}: {said}: this database role lacks a grant the config needs. "
            "Run `python manage.py autoembed_grants ROLE --apply` as the owner of its tables "
            "(again after a migration that made a table: a model change of a config stored "
            "in chunks makes one); its jobs wait, unspent.",
            kind=ErrorKind.CONFIG,
        )
        paused = ProcessingPaused(error, provider=grants_key(config))
        self._pause(config, grants_key(config), paused, siblings, result)

    def _changed_meanwhile(
        self, config: EmbeddingConfig, exc: ModelChanged, siblings: list[Row], result: BatchResult
    ) -> None:
        """Another process changed the config's model while these rows were embedded: its
        config pauses; a model change's new column (or chunk table) cut over or abandoned
        meanwhile has nothing to pause: the cutover renamed its jobs for the live config
        (the abandon deleted them), which embeds them now."""
        if config.shadow_of is not None:
            logger.info("%s", exc)
            self._hand_back(siblings, 0.0, "the model change was cut over meanwhile")
            return
        changed = _model_changed(config, exc)
        self._pause(config, changed.provider, changed, siblings, result)

    def _pause(
        self,
        config: EmbeddingConfig,
        key: str,
        paused: ProcessingPaused,
        siblings: list[Row],
        result: BatchResult,
    ) -> None:
        result.pauses[key] = paused
        delay = self.pauses.pause(key, paused)
        if key == identity.pause_key(config):
            self._hand_back_refused(siblings, delay, f"paused: {paused}")
        else:
            self._hand_back(siblings, delay, f"paused: {paused}")

    def _verify(self, config: EmbeddingConfig, result: BatchResult) -> None:
        """Its stored vectors were made by the declared model (or there are none): a changed
        model pauses this config alone, with the ways out in the error."""
        try:
            read = identity.verify(self.using, config)
        except ModelChanged as exc:
            error = ProviderError(str(exc), kind=ErrorKind.CONFIG)
            raise ProcessingPaused(error, provider=identity.pause_key(config)) from exc
        if read:  # re-embedded or restored since a process paused it: that pause is over
            result.answered.add(identity.pause_key(config))

    def _resolve(self, config: EmbeddingConfig, key: str) -> Resolved:
        """The config resolved; a provider that cannot even start (no key, a provider's
        package missing) pauses that provider only, as a refused key does."""
        try:
            return self.targets.resolve(config)
        except ConfigurationError as exc:
            error = ProviderError(str(exc), kind=ErrorKind.CONFIG)
            raise ProcessingPaused(error, provider=key) from exc

    def _write_and_acknowledge(
        self,
        dest: Destination,
        group: list[Row],
        siblings: list[Row],
        ready: list[Any],
        contents: dict[Any, str],
        embedded: Embedded,
        result: BatchResult,
    ) -> None:
        messages = list({id(r.message): r.message for r in siblings}.values())
        with transaction.atomic(using=self.using):
            if dest.target.config.shadow_of is not None:  # a model change's new column
                changes.guard_shadow(self.using, dest.target.config)
            identity.guard_write(self.using, dest.target.config)
            written, busy, stored = dest.write(list(dict.fromkeys(ready)), contents, embedded)
            result.embedded += stored
            for row in group:
                if row.outcome is None:
                    kind = OutcomeKind.BUSY if row.pk in busy else OutcomeKind.DONE
                    row.outcome = Outcome(kind)
            plan = self._plan(messages, siblings)
            with connections[self.using].cursor() as cursor:
                failures.forget(cursor, dest.target.config.label, written)
                apply_acks(cursor, plan)
            result.dead += len(plan.dead)

    def _hand_back_refused(self, rows: list[Row], pause: float, why: str) -> None:
        """Hand back a refused config's rows for about REFUSED_HAND_BACK, remembered as
        refused (`--once` does not wait for them)."""
        self.pauses.refused({r.message.msg_id for r in rows})
        if self.pauses.brief_refusals:
            pause = min(pause, REFUSED_HAND_BACK) * random.uniform(1.0, REFUSED_JITTER)
        self._hand_back(rows, pause, why)

    def _hand_back(self, rows: list[Row], delay: float, why: str) -> None:
        """Give rows' messages back unspent, hidden for ``delay`` seconds (a paused provider)."""
        if not rows:
            return
        held = list({id(r.message): r.message for r in rows}.values())
        with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
            queue.release(cursor, [m.msg_id for m in held], delay)
        for row in rows:
            row.outcome = Outcome(OutcomeKind.SKIPPED, why)

    def _plan(self, messages: list[Message], rows: list[Row]) -> AckPlan:
        current = settings.current()
        return plan_acks(
            messages,
            rows,
            max_attempts=int(current.max_attempts),
            backoff=float(current.retry_backoff),
            backoff_max=float(current.retry_backoff_max),
        )


def _model_changed(config: EmbeddingConfig, exc: ModelChanged) -> ProcessingPaused:
    """A changed model pauses its config alone (jobs unspent), with the ways out."""
    error = ProviderError(str(exc), kind=ErrorKind.CONFIG)
    return ProcessingPaused(error, provider=identity.pause_key(config))


def by_config(rows: list[Row]) -> dict[str, tuple[EmbeddingConfig, list[Row]]]:
    """The rows still to work on, by the config they belong to."""
    groups: dict[str, tuple[EmbeddingConfig, list[Row]]] = {}
    for row in rows:
        if row.outcome is None and row.config is not None:
            groups.setdefault(row.config.label, (row.config, []))[1].append(row)
    return groups


def _judge(
    row: Row,
    target: Resolved,
    dest: Destination,
    contents: dict[Any, str],
    broken: dict[Any, str],
    embedded: Embedded,
) -> bool:
    """Set the outcome of a row that will not be written (and say True); a row left without
    one is ready to be written."""
    if row.pk in broken:
        row.outcome = Outcome(OutcomeKind.FAILED, broken[row.pk])
    elif row.pk not in contents:  # deleted: nothing to embed (its chunks went with it)
        row.outcome = Outcome(OutcomeKind.DONE)
    elif row.pk in dest.problems:
        row.outcome = Outcome(OutcomeKind.FAILED, dest.problems[row.pk])
    else:
        texts = dest.needs.get(row.pk, [])
        for text in texts:
            if text in embedded.too_long:
                _say_too_long(target, row, embedded.too_long[text])
        errors = [embedded.errors[t] for t in texts if t in embedded.errors]
        if any(t in embedded.skipped for t in texts):
            why = "time budget spent before this row was sent; queued again"
            row.outcome = Outcome(OutcomeKind.SKIPPED, why)
        elif errors:  # all of a text version's vectors, or none of them
            row.outcome = Outcome(
                _failure_kind(target, texts, errors, embedded),
                f"{dest.failure_prefix}{errors[0]}",
                errors[0].retry_after,
            )
    return row.outcome is not None


def _failure_kind(
    target: Resolved, texts: list[str], errors: list[ProviderError], embedded: Embedded
) -> OutcomeKind:
    if all(e.kind is ErrorKind.THROTTLED for e in errors):
        return OutcomeKind.THROTTLED
    if target.config.too_long == "fail" and any(t in embedded.too_long for t in texts):
        return OutcomeKind.REJECTED
    return OutcomeKind.FAILED


def _say_too_long(target: Resolved, row: Row, tokens: int) -> None:
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


def labels(messages: list[Message]) -> set[str]:
    """The labels of the configs these messages name."""
    out = set()
    for message in messages:
        target = message.target
        config = target and registry.match(target.table, target.function, target.column)
        if config:
            out.add(config.label)
    return out


def run_batch(
    processor: Processor,
    indexing: Any,
    messages: list[Message],
    *,
    deadline: float | None = None,
    rows_for: Callable[[Message], Iterable[Any]] | None = None,
    divert: Callable[[list[Message]], list[Message]] | None = None,
) -> BatchResult | None:
    """One batch as the worker's lanes and the endpoint run it: ``divert`` may send some
    messages to the Batch API, the index deferral decides (a backlog may defer an index),
    the rest are processed, and the index deferral hears which providers answered.
    None: every message went to a batch."""
    if divert is not None:
        messages = divert(messages)
        if not messages:
            indexing.tick(set())
            return None
    indexing.tick(labels(messages))
    result = processor.process(messages, deadline=deadline, rows_for=rows_for)
    indexing.heard(result.answered)
    return result
