"""Backfills through the provider's Batch API: half the price, no rate limits to meet.

``process_embeddings --backfill`` queues its jobs marked as the backfill's. A worker
started with ``--batch-api`` sends those jobs' texts (the ones no process has a vector
for yet) to batches, filled across its reads until a batch is as large as the API and
the account's enqueued-token budget allow (``filling``, ``budget``); it submits them
(``submission``) and keeps the jobs held, unspent, until the batch is over. Every worker,
with ``--batch-api`` or not, looks at the batches in flight and collects those that
are over (``collect``). What each part keeps in Postgres is in ``records``.

Jobs from the triggers, rows users write, never wait for a batch (``divert``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import connections, transaction

from .. import queue
from ..providers.base import BatchAPI
from .budget import room
from .collect import Collector
from .divert import for_batches, split_for_batches
from .filling import Filler, Taken, Wanted
from .records import BatchState, ProviderBatch, in_flight, status_rows
from .submission import submit, waiting_seconds

if TYPE_CHECKING:
    from ..pipeline import Processor
    from ..pipeline.target import Resolved
    from ..queue import Message

logger = logging.getLogger(__name__)

# Jobs gathered into a batch being filled stay hidden this long (their read not counted):
# ample for a batch to fill and be recorded; a worker that dies meanwhile loses nothing.
FILL_HOLD = 600

__all__ = ["BatchState", "Batches", "ProviderBatch", "in_flight", "status_rows"]


class Batches:
    """A worker's side of the Batch API on one database: with ``divert``, fill batches with
    the backfill's jobs and submit them; in any case, collect the batches that are over."""

    def __init__(
        self, using: str, *, divert: bool = False, poll_every: float | None = None
    ) -> None:
        self.using = using
        self.diverting = divert
        self.collector = Collector(using, poll_every=poll_every)
        self.filler = Filler()
        self._warned: set[str] = set()

    @property
    def poll_every(self) -> float:
        return self.collector.poll_every

    def poll(self, *, force: bool = False) -> int:
        """Batches in flight, collecting those that are over (every ``poll_every`` s)."""
        return self.collector.poll(force=force)

    def waiting(self) -> bool:
        """Whether a batch is in flight or being filled (``--once`` waits for them)."""
        return bool(self.filler) or self.poll() > 0

    def divert(self, processor: Processor, messages: list[Message]) -> list[Message]:
        """Put the backfill's jobs whose texts need embedding into batches; returns the
        jobs to process now."""
        if not self.diverting or not messages:
            return messages
        blocked = self._blocked(processor, messages)
        if blocked:
            with connections[self.using].cursor() as cursor:
                queue.release(cursor, [m.msg_id for m in blocked], waiting_seconds())
            ids = {m.msg_id for m in blocked}
            messages = [m for m in messages if m.msg_id not in ids]
        split = split_for_batches(processor, messages)
        now = split.now
        for target, wanted in split.wanted.values():
            now.extend(self._fill(target, wanted, processor.batch_size))
        self.submit_due(processor.batch_size)
        return now

    def submit_due(self, batch_size: int, *, everything: bool = False) -> int:
        """Submit the batches that are full or old enough (``everything``: all of them, as
        when the queue has nothing more for them); returns how many were submitted."""
        count = sum(
            submit(self.using, fill, batch_size) is not None
            for fill in self.filler.take_due(everything=everything)
        )
        self.collector.submitted(count)
        return count

    def close(self) -> None:
        """The worker stops: the jobs of batches still being filled go back at once."""
        ids = [i for fill in self.filler.take_due(everything=True) for i in fill.messages]
        if ids:
            with connections[self.using].cursor() as cursor:
                queue.set_vt(cursor, ids, 0)

    def _blocked(self, processor: Processor, messages: list[Message]) -> list[Message]:
        """The backfill's jobs of models whose enqueued-token budget is spent (and that no
        batch being filled has room for): they wait, their texts not even read."""
        free: dict[str, int] = {}
        blocked = []
        for message in messages:
            if not for_batches(message) or message.target is None:
                continue
            config, _ = processor.targets.match(message.target)
            if config is None or self.filler.has_room(config.label):
                continue
            model = config.get_model()
            if model not in free:
                free[model] = room(self.using, model).batch_tokens - self.filler.pending_tokens(
                    model
                )
            if free[model] <= 0:
                blocked.append(message)
        return blocked

    def _fill(self, target: Resolved, wanted: list[Wanted], batch_size: int) -> list[Message]:
        """Add one config's jobs to its batch being filled; returns those to process now."""
        provider = target.provider
        label = target.config.label
        if not isinstance(provider, BatchAPI):
            if label not in self._warned:
                self._warned.add(label)
                logger.warning(
                    "%s: the %r provider has no Batch API; its backfill goes through the "
                    "embeddings API.",
                    label,
                    provider.name,
                )
            return [w.message for w in wanted]
        with connections[self.using].cursor() as cursor:
            # Hidden for the filling, the read not counted: before any of them is in the
            # filler, where another lane may submit it (and hold it for the batch) at once.
            # The batch holds only those still hidden as this left them.
            shown = queue.release(cursor, [w.message.msg_id for w in wanted], FILL_HOLD)
        wanted = [w for w in wanted if w.message.msg_id in shown]  # not deleted meanwhile
        for item in wanted:
            item.message.vt = shown[item.message.msg_id]
        taken = self._add(target, wanted)
        if taken.refused and self.submit_due(batch_size):  # the batch was full: a new one
            retry = [w for w in wanted if any(w.message is m for m in taken.refused)]
            again = self._add(target, retry)
            others = [m for m in taken.refused if not any(m is w.message for w in retry)]
            taken.accepted += again.accepted
            taken.refused = others + again.refused
            taken.too_large += again.too_large
        with connections[self.using].cursor() as cursor:
            queue.set_vt(cursor, [m.msg_id for m in taken.refused], waiting_seconds())
            # Worked on now after all: the read counts (it was handed back above).
            queue.recount(cursor, [m.msg_id for m in taken.too_large])
        return taken.too_large

    def _add(self, target: Resolved, wanted: list[Wanted]) -> Taken:
        """Add jobs to the config's batch being filled. A job larger than any batch may be
        is split: its leading rows that fit go in, the rest is queued again as a new job.
        One whose first row alone is too large keeps that row, for the embeddings API
        (``too_large``), and the rest is queued again."""
        model = str(target.provider.model)
        free = room(self.using, model)
        tokens = free.batch_tokens - self.filler.pending_tokens(model)
        taken = self.filler.add(target, wanted, tokens, free.cap)
        too_large: list[Message] = []
        with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
            for message, keep in taken.split:
                kept = queue.split_off(cursor, message, keep)
                [item] = [w for w in wanted if w.message is message]
                again = self.filler.add(target, [Wanted(kept, item.rows[:keep])], tokens, free.cap)
                taken.accepted += again.accepted
                taken.refused += again.refused + [m for m, _ in again.split] + again.too_large
            for message in taken.too_large:
                logger.warning(
                    "%s: a row of job %d has more text than a batch may hold (%d tokens); it "
                    "goes through the embeddings API.",
                    target.config.label,
                    message.msg_id,
                    free.cap,
                )
                single = len(message.row_ids) > 1
                too_large.append(queue.split_off(cursor, message, 1) if single else message)
        taken.split, taken.too_large = [], too_large
        return taken
