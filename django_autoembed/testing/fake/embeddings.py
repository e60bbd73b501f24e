"""``POST /v1/embeddings``: a request counted, let past the limits, then answered with vectors
or with the failure a test injected."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .limits import Window, check_limits, rate_limit, rejected
from .protocol import (
    EmbeddingsRequest,
    Reply,
    access_refusal,
    api_error,
    embeddings_payload,
    parse_embeddings_request,
)
from .vectors import VECTORS, of_model

if TYPE_CHECKING:
    from .server import FakeEmbeddingsServer

Failure = tuple[int, float | None, float]  # (status, its Retry-After, seconds to hang first)


@dataclass(frozen=True)
class Admitted:
    """A request let past the checks and the limits, to be answered."""

    request: EmbeddingsRequest
    tokens: int
    headers: dict[str, str]  # the x-ratelimit-* headers its answer carries


class EmbeddingsAPI:
    """The embeddings endpoint of ``fake``: reads its settings, keeps its counters.

    ``lock`` guards the counters, shared with the server; ``rng`` draws the random failures.
    """

    def __init__(
        self, fake: FakeEmbeddingsServer, lock: threading.Lock, rng: random.Random
    ) -> None:
        self.fake = fake
        self._lock = lock
        self._random = rng
        self._scheduled: list[Failure] = []
        self._window: Window = []
        self._in_flight = 0

    def clear(self) -> None:
        """Forget the failures scheduled and the last minute's requests (lock held)."""
        self._scheduled.clear()
        self._window = []

    def schedule(self, failure: Failure, count: int) -> None:
        with self._lock:
            self._scheduled.extend([failure] * count)

    def count_request(self) -> None:
        fake = self.fake
        with self._lock:
            fake.requests += 1
            if fake.first_request_at is None:
                fake.first_request_at = time.perf_counter()

    def admit(self, raw: bytes) -> Admitted | Reply:
        """The request in ``raw`` to answer, or the refusal the real API would answer it with."""
        fake = self.fake
        request = parse_embeddings_request(raw)
        if isinstance(request, Reply):
            return request
        refusal = access_refusal(
            request,
            strict_models=fake.strict_models,
            refused_models=fake.refused_models,
            quota_exhausted=fake.quota_exhausted,
        )
        if refusal is not None:
            return refusal
        exact = fake.exact_tokens or fake.tpm is not None
        tokens, too_big = check_limits(request.texts, exact=exact)
        if too_big is not None:
            with self._lock:
                fake.refused_for_limits += 1
            return Reply(400, api_error(too_big, param="input"))
        throttled, headers = self._rate_limited(tokens)
        if throttled is not None:
            return Reply(
                429, api_error(throttled, type_="requests", code="rate_limit_exceeded"), headers
            )
        return Admitted(request, tokens, headers)

    def _rate_limited(self, tokens: int) -> tuple[str | None, dict[str, str]]:
        """(a 429's message, or None when the request may go; the x-ratelimit-* headers the
        answer carries), for the per-minute limits over a sliding minute."""
        fake = self.fake
        if fake.rpm is None and fake.tpm is None:
            return None, {}
        now = time.monotonic()
        with self._lock:
            limit = rate_limit(
                self._window, now=now, tokens=tokens, rpm=fake.rpm, tpm=fake.tpm, minute=fake.window
            )
            self._window = limit.window
            if limit.refusal is not None:
                fake.throttled += 1
        return limit.refusal, limit.headers

    @contextmanager
    def answering(self, tokens: int) -> Iterator[None]:
        """Count a request in flight while its answer is made and sent."""
        fake = self.fake
        with self._lock:
            fake.sent.append((time.monotonic(), tokens))
            self._in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def answer(self, admitted: Admitted) -> Reply:
        """The vectors, or the failure injected, after the latency set."""
        fake = self.fake
        texts = admitted.request.texts
        failure = self._failure()
        if fake.on_request is not None:
            fake.on_request(texts)
        if fake.latency:
            time.sleep(fake.latency)
        if failure is not None:
            injected = self._injected(failure)
            if injected is not None:
                return injected
        if rejected(texts, fake.poison):
            with self._lock:
                fake.failures += 1
            return Reply(
                fake.poison_status, {"error": {"message": "input rejected (poison or empty)"}}
            )
        with self._lock:
            fake.inputs += len(texts)
            fake.texts.extend(texts)
            fake.tokens += admitted.tokens
        dims = fake.dimensions_override or admitted.request.dims
        model = str(admitted.request.body.get("model")) if fake.model_vectors else None
        vectors = VECTORS[fake.vectors](of_model(texts, model), dims).astype("<f4")
        payload = embeddings_payload(admitted.request.body, vectors, admitted.tokens)
        return Reply(200, payload, admitted.headers)

    def _failure(self) -> Failure | None:
        fake = self.fake
        with self._lock:
            if self._scheduled:
                return self._scheduled.pop(0)
            if fake.failure_rate and self._random.random() < fake.failure_rate:
                status = self._random.choice(fake.failure_statuses)
                return status, fake.retry_after if status == 429 else None, 0.0
        if fake.hang_seconds:
            return 200, None, fake.hang_seconds
        return None

    def _injected(self, failure: Failure) -> Reply | None:
        """The failure's answer, after its hang; None for a hang that ends in an answer."""
        status, retry_after, hang = failure
        if hang:
            time.sleep(hang)
        if status == 200:
            return None
        with self._lock:
            self.fake.failures += 1
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return Reply(status, {"error": {"message": f"injected {status}"}}, headers)
