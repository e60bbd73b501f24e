"""Submitting a filled batch: its tokens reserved against the enqueued-token budget and
its jobs held in one transaction, then the upload, then the record marked submitted.

The jobs are held (hidden for the batch's window, marked with the record's id) before
anything is uploaded, so no other worker can take them while the upload runs. A worker
killed mid-upload leaves a record "preparing": after ``PREPARING_TIMEOUT`` any worker
looks for the batch at the provider (by its metadata) and adopts it, or gives its jobs
back; a submission that ends after its jobs were given back cancels its batch. So the
same jobs are never in two batches that run.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import connections, transaction
from django.utils import timezone

from .. import incidents, providers, queue, settings
from .. import sql as sqlfiles
from ..exceptions import ProviderError
from ..hnsw.sessions import LOCK_SPACE, lock_key
from ..incidents import IncidentKind
from ..providers.base import BatchAPI, chunk_inputs
from .budget import room
from .filling import Filling, input_bytes
from .records import DONE, HOLD_SECONDS, PREPARING, SUBMITTED, ProviderBatch

logger = logging.getLogger(__name__)

# How long a worker may take to upload and create a batch before another looks for it.
PREPARING_TIMEOUT = timedelta(minutes=10)


def waiting_seconds() -> float:
    """How long jobs no batch has room for wait before they are looked at again."""
    return max(0.1, float(settings.current().batch_poll_seconds))


def submit(using: str, fill: Filling, batch_size: int) -> ProviderBatch | None:
    """Submit the batch ``fill`` gathered; None when the budget has no room for it now (its
    jobs wait) or the provider refused it (they wait, or with BATCH_FALLBACK go to the
    embeddings API)."""
    target = fill.target
    provider = target.provider
    assert isinstance(provider, BatchAPI)
    keys, texts = list(fill.inputs), list(fill.inputs.values())
    # Request lines as large as the worker's requests (many more inputs fit a line, but a
    # line the API refuses fails all of them).
    slices = list(
        chunk_inputs(
            texts,
            max_inputs=max(1, min(batch_size, provider.max_inputs)),
            max_tokens=provider.max_request_tokens,
            estimate=provider.request_cost,
        )
    )
    size = sum(input_bytes(t) for t in texts)
    record = _reserve(using, fill, keys, [hi - lo for lo, hi in slices], _lease(size))
    if record is None:
        return None
    try:
        batch_id = provider.submit_batch(
            [texts[lo:hi] for lo, hi in slices],
            custom_prefix=f"autoembed-{record.pk}",
            metadata={"autoembed_batch": str(record.pk), "config": target.config.label},
        )
    except ProviderError as exc:
        _refused(using, record, exc)
        return None
    marked = (
        ProviderBatch.objects.using(using)
        .filter(pk=record.pk, state=PREPARING)
        .update(batch_id=batch_id, state=SUBMITTED, status="validating", leased_until=None)
    )
    if not marked and _given_up(using, record.pk):
        # Given up on while this upload ran (its lease ran out and the provider did not have
        # it yet): its jobs may be in another batch now. (Found and adopted by another
        # worker, it is submitted: nothing to undo.)
        logger.warning(
            "%s: Batch API job %s was created after its jobs were given back; cancelling it.",
            target.config.label,
            batch_id,
        )
        try:
            provider.cancel_batch(batch_id)
        except ProviderError as exc:
            logger.error("Could not cancel Batch API job %s: %s", batch_id, exc)
        return None
    logger.info(
        "%s: submitted Batch API job %s: %d texts, %d tokens, %d requests, %d queued jobs.",
        target.config.label,
        batch_id,
        len(texts),
        fill.tokens,
        len(slices),
        len(fill.messages),
        extra={"config": target.config.label, "batch": batch_id, "inputs": len(texts)},
    )
    record.batch_id, record.state = batch_id, SUBMITTED
    return record


def _given_up(using: str, pk: int) -> bool:
    states = ProviderBatch.objects.using(using).filter(pk=pk).values_list("state", flat=True)
    return list(states) == [DONE]


def _lease(size: int) -> timedelta:
    """How long a submission may take before another worker looks for its batch: ten
    minutes, longer for a file that takes longer to upload at 200 KB/s."""
    return max(PREPARING_TIMEOUT, timedelta(seconds=size / 200_000))


class _Lost(Exception):
    """Some of a batch's jobs were taken by another worker since they were gathered."""


def _reserve(
    using: str, fill: Filling, keys: list[bytes], lines: list[int], lease: timedelta
) -> ProviderBatch | None:
    """Record the batch and hold its jobs, if the enqueued-token budget has room for it:
    one transaction, under a lock per model, so that workers submitting at once do not
    both take the last of the room. None when there is no room (the jobs wait), or when
    some job is no longer ours (the filling outlived FILL_HOLD: nothing is submitted, and
    the jobs still ours show again at once)."""
    try:
        return _record(using, fill, keys, lines, lease)
    except _Lost:
        logger.warning(
            "%s: a batch's jobs were taken by another worker while it filled; not submitted.",
            fill.target.config.label,
        )
        with connections[using].cursor() as cursor:
            queue.show_if_ours(cursor, list(fill.messages.values()))
        return None


def _record(
    using: str, fill: Filling, keys: list[bytes], lines: list[int], lease: timedelta
) -> ProviderBatch | None:
    ids = list(fill.messages)
    target = fill.target
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(
            sqlfiles.statement("batches.sql", "lock_model"),
            [LOCK_SPACE, lock_key(f"batch:{fill.model}")],
        )
        free = room(using, fill.model)
        if free.in_flight + fill.tokens > free.limit:
            queue.set_vt(cursor, ids, waiting_seconds())
            logger.info(
                "%s: no room for a batch of %d tokens (%d of %d enqueued); its %d jobs wait.",
                target.config.label,
                fill.tokens,
                free.in_flight,
                free.limit,
                len(ids),
            )
            return None
        record = ProviderBatch.objects.using(using).create(
            config=target.config.label,
            provider=providers.label(target.config)[:255],
            model=fill.model,
            messages=ids,
            keys=b"".join(keys),
            lines=lines,
            inputs=len(keys),
            enqueued=fill.tokens,
            leased_until=timezone.now() + lease,
        )
        held = queue.hold_for_batch(cursor, list(fill.messages.values()), record.pk, HOLD_SECONDS)
        if len(held) < len(ids):
            raise _Lost
    return record


def _refused(using: str, record: ProviderBatch, exc: ProviderError) -> None:
    """The provider refused the upload or the batch: the record is done, its jobs wait for
    another try (or go to the embeddings API, with BATCH_FALLBACK), and the refusal is
    counted where ``autoembed_status`` shows it."""
    fallback = settings.current().batch_fallback
    then = (
        "its jobs go to the embeddings API (BATCH_FALLBACK)"
        if fallback
        else f"its jobs wait and are tried again in {waiting_seconds():.0f} s "
        "(set AUTOEMBED['BATCH_FALLBACK'] = True to embed them at full price instead)"
    )
    incidents.report(
        using,
        IncidentKind.BATCH_SUBMIT,
        record.config,
        f"the Batch API refused a batch of {record.inputs} texts ({exc}); {then}.",
    )
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            queue.back_from_batch(
                cursor,
                list(record.messages),
                record.pk,
                from_batch=record.pk if fallback else None,
                delay=0 if fallback else waiting_seconds(),
            )
        record.state, record.error = DONE, f"refused: {exc}"[:2000]
        record.finished, record.leased_until = timezone.now(), None
        record.save(using=using, update_fields=["state", "error", "finished", "leased_until"])
