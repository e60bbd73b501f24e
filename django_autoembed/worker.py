"""The pull worker: read batches, process them, sleep until NOTIFY or the next poll."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, TextIO

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction

from . import budget, changes, db, incidents, queue, settings, store
from .batches import Batches
from .db import connect
from .declarations import registry
from .exceptions import StatementCancelled
from .hnsw.deferral import Indexing
from .incidents import IncidentKind
from .pauses import PauseBook
from .pipeline import BatchResult, Processor, run_batch

logger = logging.getLogger(__name__)

CHANNEL = queue.CHANNEL  # kept for callers of the worker module
# With --once: how long to wait for jobs put back a moment ago (rows that were locked).
ONCE_GRACE_SECONDS = 2.0
# With --once: batches cancelled in a row by a statement timeout before the run gives up.
ONCE_MAX_CANCELS = 3


@dataclass
class WorkerOptions:
    """How a worker runs. ``default_options`` fills the AUTOEMBED-backed ones."""

    batch_size: int
    max_requests: int
    visibility_timeout: int
    concurrency: int
    poll_interval: float = 5.0
    once: bool = False
    using: str = "default"
    max_downtime: float = 60.0
    # With --once: give up on rows other transactions keep locked after this many seconds.
    lock_wait: float = 10.0
    progress: TextIO | None = None
    # Send the texts no process has a vector for through the provider's Batch API.
    batch_api: bool = False


def default_options(**overrides: Any) -> WorkerOptions:
    """Options from AUTOEMBED and WorkerOptions' defaults; a None override keeps the default."""
    values: dict[str, Any] = {
        "batch_size": settings.current().batch_size,
        "max_requests": settings.current().max_requests,
        "visibility_timeout": settings.current().visibility_timeout,
        "concurrency": settings.current().concurrency,
    }
    known = {f.name for f in fields(WorkerOptions)}
    values.update({k: v for k, v in overrides.items() if v is not None and k in known})
    return WorkerOptions(**values)


class Worker:
    """Runs until stopped by SIGINT/SIGTERM (or, with ``once``, until the queue is drained).

    ``concurrency`` lanes run side by side, each reading and processing its own
    batches on its own connection, so one lane writes while another waits on
    the provider. A configuration error or an outage pauses that provider only:
    its jobs go back to the queue unspent, the worker says once what is wrong,
    and tries it again with a growing pause until it answers; the jobs of
    other providers go on meanwhile.
    """

    def __init__(self, options: WorkerOptions) -> None:
        self.o = options
        self.stopping = False
        self.signalled = False  # stopped by SIGINT/SIGTERM: exit now, start no index build
        self.rows_done = 0
        self.started = time.monotonic()
        # Why the worker gave up, for the command to print (None: it did not).
        self.exit_reason: str | None = None
        # Rows left queued by --once because other transactions kept them locked.
        self.left_busy = 0
        self._lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.indexing = Indexing(options.using)
        self.pauses = PauseBook(options.using)
        self.pauses.brief_refusals = not options.once
        # A paused provider's deferred indexes are built again at once: its backlog waits.
        self.pauses.on_pause.append(self.indexing.rebuild_for)
        self.busy_lanes = 0  # lanes holding a batch: with --once, the others wait for them
        self.lanes_running = 0  # a lane Postgres has no connection for leaves if others run
        # Every worker collects the batches that are over; a --batch-api one fills them.
        self.batches = Batches(options.using, divert=options.batch_api)
        self.indexing.backlog.skip_backfill = options.batch_api
        # With --once: when the last rows put back for a rate limit are due again.
        self.throttled_until = 0.0
        self.cancels = 0  # batches cancelled by a statement timeout since the last one that worked

    # Rows read per batch: two rounds of full requests, so slots stay busy at high latency.
    @property
    def row_budget(self) -> int:
        return self.o.batch_size * self.o.max_requests * 2

    def stop(self, signum: int | None = None, frame: Any = None) -> None:
        if not self.stopping and signum is not None:
            logger.info("Stopping after the current batch (signal %s).", signum)
            self.indexing.cancel()
        if signum is not None:
            self.signalled = True
        self.stopping = True

    def give_up(self, reason: str, code: int) -> int:
        self.exit_reason = self.exit_reason or reason
        self.stop()
        return code

    def run(self) -> int:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        lanes = max(1, self.o.concurrency)
        self.lanes_running = lanes
        # One pool of request slots for all lanes: the same bound in total, and a
        # lane working alone (the last batch of a backlog) uses the idle lanes' slots.
        self.pool = ThreadPoolExecutor(
            max_workers=lanes * self.o.max_requests, thread_name_prefix="autoembed"
        )
        try:
            if lanes == 1:
                return self._finish(_Lane(self).run())
            return self._finish(self._run_lanes(lanes))
        finally:
            self.pool.shutdown()
            self._release_filling()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _release_filling(self) -> None:
        """The jobs of batches still being filled go back to the queue at once."""
        try:
            self.batches.close()
        except DatabaseError as exc:  # they come back when their hold ends
            logger.warning("Could not hand back the jobs of a batch being filled: %s", exc)

    def _run_lanes(self, lanes: int) -> int:
        """Run ``lanes`` lanes in threads of their own; the highest exit code wins."""
        codes: list[int] = []
        errors: list[BaseException] = []

        def lane() -> None:
            try:
                codes.append(_Lane(self).run())
            except BaseException as exc:  # one lane failing stops the others, re-raised below
                errors.append(exc)
                self.stop()

        threads = [threading.Thread(target=lane, name=f"autoembed-lane-{i}") for i in range(lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # short joins keep the main thread free for signals
        if errors:
            raise errors[0]
        return max(codes, default=1)

    def _finish(self, code: int) -> int:
        """With --once: say which providers are still paused (exit 2), and build every index
        deferred for the backlog (unless a signal asked the run to stop now: the next run
        builds it)."""
        if not self.o.once:
            return code
        paused = self.pauses.in_force()
        if paused and code == 0:
            said = " ".join(str(p) for p in paused)
            code = self.give_up(
                f"paused: {said} Their jobs stay queued; the other configs' work is done. "
                "Fix the configuration (or wait for the provider) and run again.",
                2,
            )
        if not self.signalled:
            # A run that ends leaves no index down, whatever it leaves queued (a paused
            # provider's jobs, locked rows, retries waiting out their backoff). Rows left
            # locked mean a transaction the build would wait for: it waits --lock-wait, not
            # INDEX_LOCK_TIMEOUT, and the next run builds it if that was not enough.
            self.indexing.finish(
                leaving=True, lock_timeout=self.o.lock_wait if self.left_busy else None
            )
        return code

    # -- progress -----------------------------------------------------------------

    def _done(self, rows: int) -> None:
        with self._lock:
            self.rows_done += rows
        self._progress()

    def _progress(self) -> None:
        out = self.o.progress
        if out is None or not out.isatty():
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        with connections[self.o.using].cursor() as cursor:
            depth = queue.depth(cursor).messages
        with self._lock:
            out.write(
                f"\r{self.rows_done} rows embedded, {self.rows_done / elapsed:.0f} rows/s, "
                f"queue {depth}   "
            )
            out.flush()


class Wakeups:
    """How a lane waits: until a NOTIFY (a trigger's, or a lane's handing rows back), the
    poll interval, or a stop; its LISTEN connection is its own."""

    def __init__(self, using: str, poll_interval: float, stopping: Callable[[], bool]) -> None:
        self.using = using
        self.poll_interval = poll_interval
        self.stopping = stopping
        self._listener: psycopg.Connection[Any] | None = None

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def wait(self, seconds: float | None = None) -> None:
        """Sleep until a NOTIFY (a trigger's, or a worker's handing rows back), the poll
        interval (or ``seconds``), or a stop signal."""
        deadline = time.monotonic() + (self.poll_interval if seconds is None else seconds)
        try:
            listener = self.listen()
        except (psycopg.Error, DatabaseError) as exc:
            logger.debug("LISTEN unavailable (%s); polling.", exc)
            listener = None
        while not self.stopping() and time.monotonic() < deadline:
            slice_ = min(0.5, max(0.0, deadline - time.monotonic()))
            if listener is None:
                time.sleep(slice_)
                continue
            try:
                if any(True for _ in listener.notifies(timeout=slice_, stop_after=1)):
                    return
            except psycopg.Error:
                self.close()
                return

    def listen(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            self._listener = connect(self.using)
            queue.listen(self._listener)
        return self._listener

    def close(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except psycopg.Error:
                pass
        self._listener = None


class _Lane:
    """One read-process loop with its own processor, connections and LISTEN."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.o = worker.o
        self.processor = Processor(
            using=self.o.using,
            batch_size=self.o.batch_size,
            max_requests=self.o.max_requests,
            pool=worker.pool,
            max_wait=self.o.visibility_timeout / 2,
            stopping=lambda: worker.stopping,
            pauses=worker.pauses,
        )
        self.wakeups = Wakeups(self.o.using, self.o.poll_interval, lambda: worker.stopping)
        self._busy_since: float | None = None
        self._retired = False

    def run(self) -> int:
        down_since: float | None = None
        try:
            try:
                self.wakeups.listen()  # before the first read, so no NOTIFY falls in between
            except (psycopg.Error, DatabaseError):
                pass
            while not self.worker.stopping:
                try:
                    # The rate budget is promised ahead to requests waiting their turn:
                    # reading more now would only hold jobs that cannot be sent.
                    ahead = budget.ahead(self.o.using) - budget.LOOKAHEAD_SECONDS
                    if ahead > 0:
                        self.wakeups.sleep(min(ahead, 1.0))
                        continue
                    handled = self.step()
                    down_since = None
                except StatementCancelled as cancel:
                    code = self._cancelled(cancel)
                    if code is not None:
                        return code
                    continue
                except (OperationalError, InterfaceError, psycopg.OperationalError) as exc:
                    down_since = down_since or time.monotonic()
                    code = self._lost(exc, down_since)
                    if code is not None:
                        return code
                    continue
                if handled == 0:
                    if not self.o.once:
                        self.wakeups.wait()
                    elif not self._more_to_come():
                        break
            return 0
        finally:
            if not self._retired:
                with self.worker._lock:
                    self.worker.lanes_running -= 1
            self.wakeups.close()
            if threading.current_thread() is not threading.main_thread():
                connections[self.o.using].close()

    def step(self) -> int:
        """Read and process one batch; returns how many rows it held."""
        with self.worker._lock:  # busy from the read on: other lanes wait for what it gives back
            self.worker.busy_lanes += 1
        messages: list[queue.Message] = []
        connection = connections[self.o.using]
        try:
            changes.tick(self.o.using)  # a model change under way: its backfill, its cutover
            messages, deadline = self._read(connection)
            if not messages:
                # Idle: batches being filled go now, a deferred index may be built now.
                self.worker.batches.submit_due(self.o.batch_size, everything=True)
                self.worker.indexing.tick(set())
                return 0
            batches = self.worker.batches
            result = run_batch(
                self.processor,
                self.worker.indexing,
                messages,
                deadline=deadline,
                divert=lambda ms: batches.divert(self.processor, ms),
            )
        except (OperationalError, psycopg.OperationalError) as exc:
            if not db.cancelled(exc):
                raise
            self._hand_back(messages)
            raise StatementCancelled(exc, db.current_timeout(connection)) from exc
        finally:
            with self.worker._lock:
                self.worker.busy_lanes -= 1
        if result is None:
            return len(messages)  # all of them wait for their batch
        self._done(messages, result)
        if self.o.once and self._only_busy(result):
            return 0  # nothing else to do; _due_soon decides whether to wait for the locks
        return len(result.completed) + len(result.failed) - result.held

    def _read(self, connection: Any) -> tuple[list[queue.Message], float]:
        """A batch's messages, read with the visibility timeout and trimmed to the row budget;
        and the time by which its requests must have been sent."""
        connection.close_if_unusable_or_obsolete()
        db.prepare(connection)
        store.prune(self.o.using)
        self.worker.batches.poll()
        with connection.cursor() as cursor:
            messages = queue.read(cursor, self.worker.row_budget, self.o.visibility_timeout)
            # Requests not sent by half the visibility timeout are not sent (their rows go
            # back unspent), so no other worker takes up a job this one still holds.
            deadline = time.monotonic() + self.o.visibility_timeout / 2
            return self._trim(cursor, messages), deadline

    def _done(self, messages: list[queue.Message], result: BatchResult) -> None:
        """Log a batch, count its rows, and note what it says of the worker's state."""
        logger.info(
            "Batch: %d messages, %d rows done, %d failed, %d busy, %d held back, %d dead, "
            "%d requests, %.2f s",
            len(messages),
            len(result.completed),
            len(result.failed) - result.busy - result.held,
            result.busy,
            result.held,
            result.dead,
            result.requests,
            result.seconds,
            extra={
                "messages": len(messages),
                "completed": len(result.completed),
                "failed": len(result.failed),
                "busy": result.busy,
                "held": result.held,
                "seconds": result.seconds,
            },
        )
        self.worker._done(len(result.completed))
        if result.completed and self.worker.cancels:
            with self.worker._lock:
                self.worker.cancels = 0
            incidents.clear(self.o.using, IncidentKind.STATEMENT_TIMEOUT, "worker")
        if result.throttled_wait:
            with self.worker._lock:
                self.worker.throttled_until = max(
                    self.worker.throttled_until, time.monotonic() + result.throttled_wait
                )

    def _hand_back(self, messages: list[queue.Message]) -> None:
        """A cancelled batch's jobs go back at once, the read not counted: not their fault.
        Those it had acknowledged before the cancel (done, delayed, paused) stay as they are."""
        if not messages:
            return
        try:
            with transaction.atomic(using=self.o.using), connections[self.o.using].cursor() as c:
                queue.release_untouched(c, messages)
        except DatabaseError:  # they show again after the visibility timeout
            pass

    def _cancelled(self, cancel: StatementCancelled) -> int | None:
        """Count a batch a statement timeout cancelled; with --once, give up (exit 1) after a
        few in a row, for no work can be done so. Returns the exit code, or None to go on."""
        with self.worker._lock:
            self.worker.cancels += 1
            cancels = self.worker.cancels
        fix = (
            f"Postgres cancelled a statement of the worker ({cancel}): the session's "
            f"statement_timeout is {cancel.timeout}. "
            + (
                "AUTOEMBED['STATEMENT_TIMEOUT'] is None, so the database's or role's guard rail "
                "applies to the worker too: set it to the seconds a batch's statements need "
                "(300 by default)"
                if (limit := settings.current().statement_timeout) is None
                else f"Raise AUTOEMBED['STATEMENT_TIMEOUT'] (now {limit:g} s)"
            )
            + ", or make batches smaller (--batch-size, --max-requests). The batch's jobs went "
            "back to the queue unspent."
        )
        incidents.report(self.o.using, IncidentKind.STATEMENT_TIMEOUT, "worker", fix)
        if self.o.once and cancels >= ONCE_MAX_CANCELS:
            return self.worker.give_up(f"{cancels} batches in a row were cancelled. {fix}", 1)
        self.wakeups.sleep(min(2.0**cancels, 30.0))
        return None

    def _lost(self, exc: BaseException, down_since: float) -> int | None:
        """The database failed this lane: retire it (no connection slot and other lanes
        run), give up (down for longer than --max-downtime: exit 1), or say it and retry."""
        if _out_of_slots(exc) and self._retire(exc):
            return 0
        if time.monotonic() - down_since > self.o.max_downtime:
            logger.error("Database unreachable for %.0f s, giving up: %s", self.o.max_downtime, exc)
            return self.worker.give_up(
                f"database unreachable for {self.o.max_downtime:.0f} s ({exc}). "
                "Check the database and start the worker again.",
                1,
            )
        if _out_of_slots(exc):
            logger.warning("Postgres has no connection slot free (%s); retrying. %s", exc, SLOTS)
        else:
            logger.warning("Database connection lost (%s); reconnecting.", exc)
        self._reset()
        time.sleep(1.0)
        return None

    def _more_to_come(self) -> bool:
        """With --once and nothing read: whether to wait for work that will show soon (rows
        put back a moment ago, an outage's retry, a batch in flight, another lane's hand-backs)
        or to end."""
        if self._due_soon():
            return True
        # An outage's jobs are tried again until its pause has backed off as far as it
        # goes (PAUSE_MAX); a configuration error's are not.
        retry = self.worker.pauses.retry_wait()
        if retry is not None:
            self.wakeups.sleep(retry + 0.05)
            return True
        batches = self.worker.batches
        if batches.diverting and batches.waiting():  # only a --batch-api run waits for them
            self.wakeups.wait(min(self.o.poll_interval, batches.poll_every))
            return True
        if self.worker.busy_lanes:  # they may hand rows back: wait for them
            self.wakeups.wait(0.5)
            return True
        return False

    def _only_busy(self, result: Any) -> bool:
        """With --once: whether locked rows are all that is left, and for too long."""
        if not result.busy or len(result.failed) > result.busy or result.completed:
            self._busy_since = None
            return False
        self._busy_since = self._busy_since or time.monotonic()
        if time.monotonic() - self._busy_since < self.o.lock_wait:
            return False
        self.worker.left_busy = result.busy
        self.worker.stop()
        return True

    def _due_soon(self) -> bool:
        """With --once: wait for jobs put back for a moment (rows that were locked, and rows
        a rate limit put back: a drained queue holds neither), not for retries' backoff."""
        if self.worker.stopping:
            return False
        with connections[self.o.using].cursor() as cursor:
            wait = queue.next_visible_in(cursor, but=self.worker.pauses.refused_lately())
        grace = max(ONCE_GRACE_SECONDS, self.worker.throttled_until - time.monotonic() + 1.0)
        if wait is None or wait > grace:
            return False
        self.wakeups.sleep(wait + 0.05)
        return not self.worker.stopping

    def _trim(self, cursor: Any, messages: list[queue.Message]) -> list[queue.Message]:
        return trim(cursor, messages, self.worker.row_budget, self._weight, self.o.using)

    def _weight(self, message: queue.Message) -> float:
        """Vectors a row of this message makes (1 but for configs stored in chunks)."""
        target = message.target
        config = target and registry.match(target.table, target.function, target.column)
        return self.worker.indexing.backlog.vectors_per_row(config) if config else 1.0

    def _retire(self, exc: BaseException) -> bool:
        """Leave the worker to the other lanes when Postgres has no connection for this one."""
        with self.worker._lock:
            if self.worker.lanes_running <= 1:
                return False
            self.worker.lanes_running -= 1
            left = self.worker.lanes_running
        self._retired = True
        logger.warning(
            "Postgres has no connection slot for another lane (%s): this worker goes on with "
            "%d lane(s). %s",
            exc,
            left,
            SLOTS,
        )
        return True

    def _reset(self) -> None:
        try:
            connections[self.o.using].close()
        except DatabaseError:
            pass
        self.wakeups.close()


def trim(
    cursor: Any,
    messages: list[queue.Message],
    budget: int,
    weight_of: Callable[[queue.Message], float],
    using: str,
) -> list[queue.Message]:
    """Give back messages past the budget so one batch stays bounded.

    The budget counts vectors: a row of a config stored in chunks counts its chunks (as
    estimated), and a message of more such rows than the budget holds is split, its other
    rows sent on at once for another lane to take while this one works.
    """
    kept: list[queue.Message] = []
    used = 0.0
    for message in messages:
        if kept and used >= budget:
            break
        rows = max(1, len(message.row_ids))
        weight = weight_of(message)
        if weight > 1 and rows > 1 and used + rows * weight > budget * 1.25:
            keep = max(1, int((budget - used) / weight))
            if keep < rows:
                with transaction.atomic(using=using):
                    message = queue.split_off(cursor, message, keep)
                rows = keep
        kept.append(message)
        used += rows * weight
    given_back = [m.msg_id for m in messages[len(kept) :]]
    queue.release(cursor, given_back)
    split = bool(kept) and len(kept[-1].row_ids) < len(messages[len(kept) - 1].row_ids)
    if given_back or split:
        queue.notify(cursor)  # wake the other lanes
    return kept


SLOTS = (
    "A worker holds 2 connections a lane (--concurrency, 3 lanes by default) and 2 more "
    "while it drops or builds an index: raise max_connections (or the role's or the "
    "pooler's limit), or run fewer lanes with --concurrency."
)
_NO_SLOT = re.compile(r"too many (clients|connections)|remaining connection slots")


def _out_of_slots(exc: BaseException) -> bool:
    """Whether Postgres refused a connection for want of a free slot (SQLSTATE 53300)."""
    seen: BaseException | None = exc
    chain: set[int] = set()
    while seen is not None and id(seen) not in chain:
        if getattr(seen, "sqlstate", None) == "53300" or _NO_SLOT.search(str(seen)):
            return True
        chain.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


__all__ = ["Worker", "WorkerOptions", "connect", "default_options"]
