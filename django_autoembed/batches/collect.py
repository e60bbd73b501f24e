"""Collecting batches: any worker looks at the batches in flight every
``BATCH_POLL_SECONDS`` and, under a lease, finishes those that are over.

A batch that ran: its vectors go into the vector store under the hashes of the texts
they were made from, and its jobs come back marked ``from_batch``. They are then
processed as any job: a row whose text is unchanged finds its vector in the store and
costs no request; a row edited since has a new text and is embedded afresh (never with
the old text's vector); what the batch did not embed goes through the embeddings API,
once, with no second batch round. A batch the provider refused for the account's
enqueued-token limit lowers the budget and gives its jobs back unspent for a later
batch (with BATCH_FALLBACK, to the embeddings API).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
from django.db import connections, models, transaction
from django.utils import timezone

from .. import incidents, providers, queue, settings, store, usage
from ..exceptions import ProviderError, UnknownConfig
from ..incidents import IncidentKind
from .budget import stated_limit
from .records import (
    DONE,
    LEASE,
    PREPARING,
    SUBMITTED,
    TERMINAL,
    ProviderBatch,
    enqueued_tokens,
    in_flight,
)

logger = logging.getLogger(__name__)

# The error code of a batch refused for the account's enqueued-token limit.
TOKEN_LIMIT = "token_limit_exceeded"


class Collector:
    """Looks at one database's batches in flight; a worker's lanes share one."""

    def __init__(self, using: str, *, poll_every: float | None = None) -> None:
        self.using = using
        self.poll_every = float(
            poll_every if poll_every is not None else settings.current().batch_poll_seconds
        )
        self._polled = -self.poll_every
        self._in_flight = 0
        self._lock = threading.Lock()

    def poll(self, *, force: bool = False) -> int:
        """How many batches are in flight, looking at them (and finishing those that are
        over) at most every ``poll_every`` seconds; between looks, the last count."""
        with self._lock:
            due = force or time.monotonic() - self._polled >= self.poll_every
            if not due:
                return self._in_flight
            self._polled = time.monotonic()
        left = sum(not self._look_at(record.pk) for record in in_flight(self.using))
        with self._lock:
            self._in_flight = left
        return left

    def submitted(self, count: int) -> None:
        """This worker submitted batches: they are in flight before the next look."""
        with self._lock:
            self._in_flight += count

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
        if not mine:  # done, or another worker (or its submitter) has it
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
                self.give_back(
                    record,
                    f"the provider no longer has this batch or its files (HTTP 404: {exc})",
                    to_api=False,
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
            self.give_back(
                record,
                f"{record.config} is no longer declared (its jobs fail as undeclared targets)",
                to_api=True,
            )
            return True
        provider: Any = providers.for_config(config)
        if record.state == PREPARING:
            # Its lease ran out: the worker that submitted it stopped, or is slower than
            # PREPARING_TIMEOUT. The provider says whether the batch was created.
            found = provider.find_batch({"autoembed_batch": str(record.pk)})
            if found is None:
                self.give_back(record, "the worker stopped while submitting it", to_api=False)
                return True
            record.batch_id, record.state = found, SUBMITTED
            record.save(using=self.using, update_fields=["batch_id", "state"])
        info = provider.batch_status(record.batch_id)
        if info["status"] != record.status:
            record.status = info["status"]
            record.save(using=self.using, update_fields=["status"])
        if info["status"] not in TERMINAL:
            return False
        if _error_code(info) == TOKEN_LIMIT:
            self._over_limit(record, info)
        else:
            self._finish(record, config, provider, info)
        return True

    def give_back(self, record: ProviderBatch, why: str, *, to_api: bool) -> None:
        """The jobs of a batch that will bring nothing go back to the queue now: for the
        embeddings API (``to_api``), or for another batch; the log and the record say why."""
        logger.warning(
            "Batch API job %s of %s: %s; its %d jobs go back to the queue%s.",
            record.batch_id or f"#{record.pk} (not submitted)",
            record.config,
            why,
            len(record.messages),
            " for the embeddings API" if to_api else " for another batch",
            extra={"batch": record.batch_id, "config": record.config},
        )
        self._close(record, why, from_batch=record.pk if to_api else None)

    def _over_limit(self, record: ProviderBatch, info: dict[str, Any]) -> None:
        """A batch refused for the enqueued-token limit: the limit it stated (or, if it
        stated none, what the other batches held then) is the budget from now on, and its
        jobs wait, unspent, for a batch that fits (with BATCH_FALLBACK, they go to the
        embeddings API)."""
        said = _error_message(info)
        others = enqueued_tokens(self.using, record.model) - record.enqueued
        limit = stated_limit(said) or max(others, record.enqueued // 2, 1)
        record.queue_limit = limit
        fallback = settings.current().batch_fallback
        incidents.report(
            self.using,
            IncidentKind.BATCH_LIMIT,
            record.model,
            f"the Batch API refused a batch of {record.enqueued} tokens for the account's "
            f"enqueued-token limit ({said}); batches of {record.model} now keep under "
            f"{limit} tokens. Set AUTOEMBED['BATCH_QUEUE_TOKENS'] to your tier's limit.",
        )
        self._close(
            record,
            f"{TOKEN_LIMIT}: {said}",
            from_batch=record.pk if fallback else None,
            fields=["queue_limit"],
        )

    def _close(
        self,
        record: ProviderBatch,
        why: str,
        *,
        from_batch: int | None,
        fields: list[str] | None = None,
    ) -> None:
        with transaction.atomic(using=self.using):
            with connections[self.using].cursor() as cursor:
                queue.back_from_batch(
                    cursor, list(record.messages), record.pk, from_batch=from_batch
                )
                queue.notify(cursor)
            record.state, record.error = DONE, why[:2000]
            record.finished, record.leased_until = timezone.now(), None
            if from_batch is not None:
                record.failed_keys = bytes(record.keys)
            record.save(
                using=self.using,
                update_fields=["state", "error", "finished", "leased_until", "failed_keys"]
                + (fields or []),
            )

    def _finish(
        self, record: ProviderBatch, config: Any, provider: Any, info: dict[str, Any]
    ) -> None:
        from ..vectors import precision, vector_type

        result = provider.batch_results(info, custom_prefix=f"autoembed-{record.pk}")
        keys = record.key_list()
        items: list[tuple[bytes, np.ndarray]] = []
        missed: list[bytes] = []
        start = 0
        for line, count in enumerate(record.lines):
            matrix = result.vectors.get(line)
            if matrix is not None and matrix.shape == (count, config.get_dimensions()):
                items.extend(zip(keys[start : start + count], matrix, strict=True))
            else:
                missed.extend(keys[start : start + count])
            start += count
        store.put_many(self.using, items, precision(vector_type(config)))
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
        record.vectors, record.failed, record.tokens = len(items), len(missed), result.tokens
        with transaction.atomic(using=self.using):
            with connections[self.using].cursor() as cursor:
                queue.back_from_batch(
                    cursor, list(record.messages), record.pk, from_batch=record.pk
                )
                queue.notify(cursor)
            record.state, record.finished, record.leased_until = DONE, timezone.now(), None
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


def _config_for(record: ProviderBatch) -> Any:
    from ..declarations import registry

    return registry.get(record.config)


def _errors(info: dict[str, Any]) -> list[dict[str, Any]]:
    errors = info.get("errors") or {}
    data = errors.get("data") if isinstance(errors, dict) else None
    return [e for e in data or [] if isinstance(e, dict)]


def _error_code(info: dict[str, Any]) -> str | None:
    codes = [str(e.get("code")) for e in _errors(info) if e.get("code")]
    return TOKEN_LIMIT if TOKEN_LIMIT in codes else (codes[0] if codes else None)


def _error_message(info: dict[str, Any]) -> str:
    return "; ".join(str(e.get("message", e)) for e in _errors(info))


def _batch_error(info: dict[str, Any]) -> str:
    if info.get("status") in ("failed", "expired", "cancelled"):
        said = _error_message(info)
        return f"batch {info.get('status')}" + (f": {said}" if said else "")
    return ""
