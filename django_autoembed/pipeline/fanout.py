"""The provider fan-out: which requests to send for a batch's texts, and what each answer
means (``FanOut``, pure), and the sending of them through a pool of threads (``send``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from ..exceptions import ErrorKind, ProviderError
from ..providers.base import Answer, as_matrix
from ..vectors import precision


class FanOut:
    """Which provider requests to send for a list of unique texts, and what each answer means.

    Slices of the texts become requests. A request refused for its input is
    split in halves until the bad input stands alone, so one poison text fails
    only itself. A configuration error (bad key, unknown model, wrong
    dimensions) stops everything: ``config_error`` is set and nothing more is
    sent. When every request failed for a passing reason (rate limits, server
    errors, timeouts) and none got through, the provider is ``unavailable``:
    the rows are not to blame. No I/O here: ``send`` sends the requests.
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
            (answer.vectors, answer.tokens) if isinstance(answer, Answer) else (answer, None)
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
                kind=ErrorKind.INPUT,
            )

    @property
    def unavailable(self) -> ProviderError | None:
        """The error that shows the provider down or saturated: every request failed in passing."""
        if self.answers or not self.errors or self.config_error:
            return None
        errors = list(self.errors.values())
        if not all(e.kind in (ErrorKind.TRANSIENT, ErrorKind.THROTTLED) for e in errors):
            return None
        return max(errors, key=lambda e: e.retry_after or 0)

    def expired(self, slices: Iterable[tuple[int, int]]) -> None:
        """The time budget ran out before these slices were sent: they are handed back unspent."""
        for lo, hi in slices:
            self.skipped.update(range(lo, hi))

    def _failed(self, lo: int, hi: int, exc: BaseException) -> None:
        if not isinstance(exc, ProviderError):  # a custom provider's own exception
            exc = ProviderError(f"provider {self.provider!r} failed: {exc!r}")
        if exc.kind is ErrorKind.CONFIG:
            self.config_error = self.config_error or exc
        elif exc.kind is ErrorKind.INPUT and hi - lo > 1:
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
