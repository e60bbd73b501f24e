"""Backfills through the provider's Batch API: half the price, no rate limits to meet.

``process_embeddings --batch-api`` reads the queue as usual; for the texts no
process has a vector for yet, it writes a JSONL file of embedding requests,
uploads it (Files API), creates a batch for ``/v1/embeddings`` and keeps the
jobs hidden, without spending an attempt, until the batch is over. A
``ProviderBatch`` row in Postgres records the batch (its id, its jobs, the
hashes of its texts), so a worker restarted mid-batch picks it up where it was.

When the batch is over (completed, expired or failed), its vectors go into
the vector store (``store``) under the hashes of the texts they were made
from, and the jobs are made visible again. Then they are processed as any
job is: each row's current text is looked up in the store, so a row whose
text is unchanged gets its batch vector with no further request, and a row
edited since the submission has a new text, which the store does not hold,
and is embedded afresh (never with the old text's vector). The rows whose
requests failed or did not finish in the batch go through the embeddings API
like any job, once, without another batch round.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import DatabaseError, connections, models, transaction
from django.utils import timezone

from . import db, providers, queue, settings, store, usage
from .exceptions import ConfigurationError, ProviderError, UnknownConfig
from .pipeline.destinations import destination
from .pipeline.embed import Embedded
from .pipeline.read import expand, read_texts
from .pipeline.run import by_config
from .providers.base import BatchAPI, chunk_inputs

if TYPE_CHECKING:
    from .pipeline import Processor
    from .pipeline.target import Resolved
    from .queue import Message

logger = logging.getLogger(__name__)


class BatchState(models.TextChoices):
    """Where our record of a batch stands (the provider's own status is kept beside it)."""

    PREPARING = "preparing", "preparing"  # recorded, being uploaded and created
    SUBMITTED = "submitted", "submitted"  # the provider has it
    DONE = "done", "done"  # collected, or given up on


PREPARING, SUBMITTED, DONE = BatchState.PREPARING, BatchState.SUBMITTED, BatchState.DONE
# The provider's states a batch ends in.
TERMINAL = ("completed", "expired", "failed", "cancelled")
# Jobs of a batch stay hidden this long at most (the provider's 24-hour window, and then some).
HOLD_SECONDS = 26 * 3600
# A batch that never got past "preparing" (the worker died while submitting) is given up
# after this long, and its jobs processed as usual.
PREPARING_TIMEOUT = timedelta(minutes=10)
# Jobs of batches finished this recently go through the embeddings API, not another batch.
FINISHED_MEMORY = timedelta(days=2)
KEY_BYTES = 16
# How long a worker may take to look at (and finish) one batch before another may.
LEASE = timedelta(minutes=10)


class ProviderBatch(models.Model):
    """One Batch API job: what it holds, where it stands, what came of it."""

    config = models.CharField(max_length=255, help_text="app_label.Model.config")
    provider = models.CharField(max_length=255, help_text="name, model and server; no secrets")
    model = models.CharField(max_length=255)
    batch_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    state = models.CharField(
        max_length=16,
        choices=BatchState.choices,
        default=PREPARING,
    )
    status = models.CharField(max_length=32, blank=True, default="", help_text="the provider's")
    messages = models.JSONField(default=list, help_text="queue message ids held for it")
    keys = models.BinaryField(help_text="16-byte hashes of its texts, in order")
    lines = models.JSONField(default=list, help_text="inputs per request line")
    inputs = models.PositiveIntegerField(default=0)
    vectors = models.PositiveIntegerField(default=0, help_text="vectors it brought")
    failed = models.PositiveIntegerField(default=0, help_text="inputs it did not embed")
    tokens = models.BigIntegerField(default=0)
    failed_keys = models.BinaryField(
        default=b"", help_text="hashes of the texts it did not embed (the API's to do)"
    )
    error = models.TextField(blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(
        null=True, blank=True, help_text="a worker is looking at it until then"
    )

    class Meta:
        app_label = "django_autoembed"
        ordering = ["-created"]
        verbose_name = "provider batch"

    def __str__(self) -> str:
        return f"{self.config}: batch {self.batch_id or '(submitting)'} {self.status or self.state}"


def in_flight(using: str) -> list[ProviderBatch]:
    return list(ProviderBatch.objects.using(using).exclude(state=DONE).order_by("created"))


@dataclass
class Wanted:
    """The texts one config's messages need that no process has a vector for yet."""

    target: Resolved
    messages: list[Message]
    inputs: list[tuple[bytes, str]]  # (the vector store's key of the text, what to send)


def split_for_batches(
    processor: Processor,
    messages: list[Message],
    *,
    now: Any = (),
    direct: Any = (),
) -> tuple[list[Wanted], list[Message]]:
    """Split messages for the Batch API: per config, the messages whose rows need texts no
    process has a vector for, with those texts; and the messages to process now (their
    texts are known, they match no config, or their ids are in ``now``: those go through
    the embeddings API, and a text they will embed is no reason to wait for a batch; so do
    the texts whose store key is in ``direct``, which a batch failed on). Writes nothing."""
    direct_keys, direct_ids = set(direct), set(now)
    rows = [row for m in messages for row in expand(m, processor.targets, None)]
    out: list[Wanted] = []
    waiting: set[int] = set()
    for config, group in by_config(rows).values():
        target = processor.targets.resolve(config)
        dest = destination(processor.using, target)
        contents, _broken = read_texts(processor.using, target, list({r.pk: None for r in group}))
        dest.prepare(contents)
        needs = dest.needs
        texts = sorted({t for ts in needs.values() for t in ts})
        inputs = processor.embedder.inputs(target, texts, Embedded())
        known = processor.embedder.known(target, inputs)
        unknown = set(known.missing) - {
            t for r in group if r.message.msg_id in direct_ids for t in needs.get(r.pk, ())
        }
        unknown = {t for t in unknown if known.kept_keys[t] not in direct_keys}
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
                {t for r in group if id(r.message) in later for t in needs.get(r.pk, ())} & unknown
            )
            out.append(
                Wanted(target, held, [(known.kept_keys[t], inputs[t]) for t in wanted_texts])
            )
            waiting |= later
    db.end_read(processor.using)
    return out, [m for m in messages if id(m) not in waiting]


def _config_for(record: ProviderBatch) -> Any:
    from .declarations import registry

    return registry.get(record.config)


class Batches:
    """A worker's side of the Batch API on one database: divert jobs into batches, poll them."""

    def __init__(self, using: str, *, poll_every: float | None = None) -> None:
        self.using = using
        self.poll_every = float(
            poll_every if poll_every is not None else settings.current().batch_poll_seconds
        )
        self._polled = -self.poll_every
        self._lock = threading.Lock()

    # -- submitting ----------------------------------------------------------------

    def divert(self, processor: Processor, messages: list[Message]) -> list[Message]:
        """Put the jobs whose texts need embedding into batches; returns the jobs to process
        now (their texts are all known, or they came back from a batch already)."""
        if not messages:
            return []
        recent, failed = self._recently_finished({m.msg_id for m in messages})
        found, now = split_for_batches(processor, messages, now=recent, direct=failed)
        for wanted in found:
            try:
                self._submit(wanted, processor.batch_size)
            except ProviderError as exc:
                # The Batch API refused: these jobs go the ordinary way, now, in this lane
                # (they are still hidden for it, as read).
                logger.warning(
                    "%s: the Batch API refused the batch (%s); embedding its %d jobs through "
                    "the embeddings API.",
                    wanted.target.config.label,
                    exc,
                    len(wanted.messages),
                )
                now.extend(wanted.messages)
        return now

    def _submit(self, wanted: Wanted, batch_size: int) -> ProviderBatch:
        target = wanted.target
        provider = target.provider
        if not isinstance(provider, BatchAPI):
            raise ConfigurationError(
                f"{target.config.label}: the {provider.name!r} provider has no Batch API. "
                "Run process_embeddings without --batch-api for it."
            )
        # Request lines as large as the worker's requests (many more inputs fit a line, but
        # a line the API refuses fails all of them).
        max_inputs = max(1, min(batch_size, provider.max_inputs))
        texts = [text for _, text in wanted.inputs]
        slices = list(
            chunk_inputs(
                texts,
                max_inputs=max_inputs,
                max_tokens=provider.max_request_tokens,
                estimate=provider.request_cost,
            )
        )
        ids = [m.msg_id for m in wanted.messages]
        # Recorded first: a worker that dies while submitting leaves a record the next one
        # finds the batch by (its metadata), or gives up on.
        record = ProviderBatch.objects.using(self.using).create(
            config=target.config.label,
            provider=providers.label(target.config)[:255],
            model=provider.model,
            messages=ids,
            keys=b"".join(k for k, _ in wanted.inputs),
            lines=[hi - lo for lo, hi in slices],
            inputs=len(texts),
        )
        try:
            batch_id = provider.submit_batch(
                [texts[lo:hi] for lo, hi in slices],
                custom_prefix=f"autoembed-{record.pk}",
                metadata={"autoembed_batch": str(record.pk), "config": target.config.label},
            )
        except Exception:
            record.delete(using=self.using)
            raise
        with transaction.atomic(using=self.using):
            with connections[self.using].cursor() as cursor:
                # Hidden until the batch is over; this read is not counted as an attempt.
                queue.release(cursor, ids, HOLD_SECONDS)
            record.batch_id, record.state, record.status = batch_id, SUBMITTED, "validating"
            record.save(using=self.using, update_fields=["batch_id", "state", "status"])
        logger.info(
            "%s: submitted Batch API job %s with %d texts in %d requests for %d queued jobs.",
            target.config.label,
            batch_id,
            len(texts),
            len(slices),
            len(ids),
            extra={"config": target.config.label, "batch": batch_id, "inputs": len(texts)},
        )
        return record

    def _give_back(self, record: ProviderBatch, why: str) -> None:
        """The jobs of a batch that will bring nothing go back to the queue now, for the
        embeddings API; the log and the record say why."""
        logger.warning(
            "Batch API job %s of %s: %s; its %d jobs go back to the queue for the embeddings API.",
            record.batch_id or f"#{record.pk} (not submitted)",
            record.config,
            why,
            len(record.messages),
            extra={"batch": record.batch_id, "config": record.config},
        )
        with transaction.atomic(using=self.using):
            with connections[self.using].cursor() as cursor:
                queue.set_vt(cursor, list(record.messages), 0)
            record.state, record.error = DONE, why
            record.finished, record.leased_until = timezone.now(), None
            record.failed_keys = bytes(record.keys)
            record.save(
                using=self.using,
                update_fields=["state", "error", "finished", "leased_until", "failed_keys"],
            )

    def _recently_finished(self, msg_ids: set[int]) -> tuple[set[int], set[bytes]]:
        """Of these messages, those that came back from a batch lately; and the hashes of
        the texts such batches did not embed (for the embeddings API, not another batch)."""
        if not msg_ids:
            return set(), set()
        cutoff = timezone.now() - FINISHED_MEMORY
        found: set[int] = set()
        failed: set[bytes] = set()
        for ids, keys in (
            ProviderBatch.objects.using(self.using)
            .filter(state=DONE, finished__gte=cutoff)
            .values_list("messages", "failed_keys")
        ):
            found.update(i for i in ids if i in msg_ids)
            keys = bytes(keys or b"")
            failed.update(keys[n : n + KEY_BYTES] for n in range(0, len(keys), KEY_BYTES))
        return found, failed

    # -- polling -------------------------------------------------------------------

    def poll(self, *, force: bool = False) -> int:
        """Look at the batches in flight (at most every ``poll_every`` seconds); returns how
        many are still in flight."""
        with self._lock:
            due = force or time.monotonic() - self._polled >= self.poll_every
            if due:
                self._polled = time.monotonic()
        records = in_flight(self.using)
        if not due:
            return len(records)
        return sum(not self._look_at(record.pk) for record in records)

    def _look_at(self, pk: int) -> bool:
        """Look at one batch under a lease, so that of the lanes and workers polling at once
        one alone finishes it, and no transaction stays open while the provider is asked;
        True once it is done with."""
        now = timezone.now()
        mine = (
            ProviderBatch.objects.using(self.using)
            .filter(pk=pk)
            .exclude(state=DONE)
            .filter(models.Q(leased_until__isnull=True) | models.Q(leased_until__lt=now))
            .update(leased_until=now + LEASE)
        )
        if not mine:  # done, or another worker is looking at it
            return (
                not ProviderBatch.objects.using(self.using)
                .filter(pk=pk)
                .exclude(state=DONE)
                .exists()
            )
        record = ProviderBatch.objects.using(self.using).get(pk=pk)
        done = False
        try:
            done = self._poll_one(record)
        except ProviderError as exc:
            if exc.status == 404:  # the batch, or its output, is gone: nothing will come of it
                self._give_back(
                    record,
                    f"the provider no longer has this batch or its files (HTTP 404: {exc})",
                )
                done = True
            else:
                logger.warning(
                    "Batch API job %s: could not be looked at (%s); trying again later.",
                    record.batch_id,
                    exc,
                )
        finally:
            if not done:
                ProviderBatch.objects.using(self.using).filter(pk=pk).update(leased_until=None)
        return done

    def _poll_one(self, record: ProviderBatch) -> bool:
        """True once the record is done with."""
        try:
            config = _config_for(record)
        except UnknownConfig:
            self._give_back(
                record,
                f"{record.config} is no longer declared (its jobs fail as undeclared targets)",
            )
            return True
        provider: Any = providers.for_config(config)
        if record.state == PREPARING:
            if timezone.now() - record.created < PREPARING_TIMEOUT:
                return False
            found = provider.find_batch({"autoembed_batch": str(record.pk)})
            if found is None:
                self._give_back(record, "the worker stopped while submitting it")
                return True
            record.batch_id, record.state = found, SUBMITTED
            record.save(using=self.using, update_fields=["batch_id", "state"])
        info = provider.batch_status(record.batch_id)
        if info["status"] != record.status:
            record.status = info["status"]
            record.save(using=self.using, update_fields=["status"])
        if info["status"] not in TERMINAL:
            return False
        self._finish(record, config, provider, info)
        return True

    def _finish(
        self, record: ProviderBatch, config: Any, provider: Any, info: dict[str, Any]
    ) -> None:
        from .vectors import precision, vector_type

        result = provider.batch_results(info, custom_prefix=f"autoembed-{record.pk}")
        keys = bytes(record.keys)
        dtype = precision(vector_type(config))
        items: list[tuple[bytes, np.ndarray]] = []
        missed: list[bytes] = []
        start = 0
        for line, count in enumerate(record.lines):
            matrix = result.vectors.get(line)
            got = matrix is not None and matrix.shape == (count, config.get_dimensions())
            for n in range(count):
                at = (start + n) * KEY_BYTES
                if got:
                    assert matrix is not None
                    items.append((keys[at : at + KEY_BYTES], matrix[n]))
                else:
                    missed.append(keys[at : at + KEY_BYTES])
            start += count
        store.put_many(self.using, items, dtype)
        usage.record(
            self.using,
            config.label,
            record.model,
            requests=len(result.vectors),
            inputs=len(items),
            tokens=result.tokens,
            mode=usage.UsageMode.BATCH,
        )
        reasons = sorted(set(result.errors.values()))
        with transaction.atomic(using=self.using):
            with connections[self.using].cursor() as cursor:
                queue.set_vt(cursor, list(record.messages), 0)
                queue.notify(cursor)
            record.state, record.finished, record.leased_until = DONE, timezone.now(), None
            record.vectors, record.failed, record.tokens = len(items), len(missed), result.tokens
            record.failed_keys = b"".join(missed)
            record.error = "; ".join(reasons)[:2000] or _batch_error(info)
            record.save(using=self.using)
        logger.info(
            "%s: Batch API job %s %s: %d vectors, %d inputs left to the embeddings API.",
            record.config,
            record.batch_id,
            info["status"],
            len(items),
            len(missed),
            extra={"batch": record.batch_id, "vectors": len(items), "failed": len(missed)},
        )


def _batch_error(info: dict[str, Any]) -> str:
    errors = info.get("errors") or {}
    data = errors.get("data") if isinstance(errors, dict) else None
    if info.get("status") in ("failed", "expired", "cancelled"):
        said = "; ".join(str(e.get("message", e)) for e in data or [])
        return f"batch {info.get('status')}" + (f": {said}" if said else "")
    return ""


def status_rows(using: str) -> list[dict[str, Any]]:
    """The batches in flight, for ``autoembed_status``."""
    try:
        return [
            {
                "config": r.config,
                "batch_id": r.batch_id,
                "status": r.status or r.state,
                "inputs": r.inputs,
                "jobs": len(r.messages),
                "submitted": r.created.isoformat(),
            }
            for r in in_flight(using)
        ]
    except DatabaseError:
        return []
