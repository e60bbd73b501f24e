"""``FakeEmbeddingsServer``: what a test sets and reads on the fake, and its start and stop."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from ...exceptions import InvalidValue
from .batches import FilesAndBatches
from .embeddings import EmbeddingsAPI
from .handler import LoopbackServer
from .vectors import VECTORS


class FakeEmbeddingsServer:
    """Threaded HTTP server on 127.0.0.1; ``base_url`` ends in ``/v1``."""

    # What a test sets. ``reset()`` puts back the defaults (``latency`` to 0, ``exact_tokens``
    # and ``vectors`` to the constructor's): nothing one test sets reaches the next.
    latency: float
    failure_rate: float
    failure_statuses: tuple[int, ...]
    retry_after: float | None
    hang_seconds: float
    poison: set[str]  # inputs containing these substrings are refused
    poison_status: int  # with this status (a 500: a server that chokes on them)
    dimensions_override: int | None
    # Keys the fake accepts (None: any non-empty key), and whether unknown models are refused.
    valid_keys: set[str] | None
    strict_models: bool
    # Models this account may not use (404 model_not_found, as for a model of a higher
    # tier), and whether its credit is spent (429 insufficient_quota: billing, not a rate).
    refused_models: set[str]
    quota_exhausted: bool
    # Each model its own vectors (``fake_vector(text, dims, model)``), as two real models'.
    model_vectors: bool
    # Called with each request's inputs while the client waits for the answer:
    # a test's way to change the database between a worker's read and its write.
    on_request: Callable[[list[str]], None] | None
    # Rate limits per minute (None: none), answered with 429 and x-ratelimit-* headers.
    rpm: int | None
    tpm: int | None
    window: float  # the "minute" of the per-minute limits, in seconds (shorter in tests)
    # Count every request's tokens exactly, as the API bills them (``usage``); off, short
    # texts are estimated at 4 bytes a token, which spares a bench the tokenizer's CPU
    # (the real API's tokenizer runs on its own machines, not beside the worker). With
    # per-minute limits set, counting is always exact.
    exact_tokens: bool
    batch_delay: float  # seconds from creation to the end of a batch
    # How batches end: "completed", "expired" (half done), "failed" or "cancelled" (none).
    batch_outcome: str
    files_status: int | None  # uploads answer this error status (None: work)
    # The Batch API's limits: enqueued tokens per model over the batches not yet over (None:
    # none), a batch's embedding inputs and request lines, an input file's bytes; and the
    # share of request lines a batch fails (500s in its error file).
    batch_queue_limit: int | None
    batch_max_inputs: int
    batch_max_lines: int
    batch_max_bytes: int
    batch_line_failure_rate: float

    # What a test reads.
    sent: list[tuple[float, int]]  # (time.monotonic(), tokens) of each request let past the limits
    refused_for_limits: int  # requests refused with a 400 for the API's limits
    tokens: int  # tokens of the requests answered with vectors
    throttled: int  # requests answered 429 for the per-minute limits
    requests: int
    inputs: int
    failures: int
    max_in_flight: int  # most requests the server was answering at once
    texts: list[str]
    first_request_at: float | None  # time.perf_counter() of the first request
    # The Files and Batch APIs' uploaded files and batches, and the inputs batches embedded.
    files: dict[str, dict[str, Any]]
    batches: dict[str, dict[str, Any]]
    batch_texts: list[str]
    batch_limit_refusals: int  # batches failed for the enqueued-token limit

    def __init__(
        self,
        *,
        latency: float = 0.0,
        port: int = 0,
        exact_tokens: bool = True,
        vectors: str = "distinct",
    ) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(1234)
        self._exact_default = exact_tokens
        self._vectors_default = vectors
        self._restore()
        self.latency = latency
        self._embeddings = EmbeddingsAPI(self, self._lock, self._random)
        self._files = FilesAndBatches(self, self._lock, self._random)
        self._server = LoopbackServer(port, self, self._embeddings, self._files)
        self._thread: threading.Thread | None = None

    def _restore(self) -> None:
        self.latency = 0.0
        self.failure_rate = 0.0
        self.failure_statuses = (500, 429)
        self.retry_after = None
        self.hang_seconds = 0.0
        self.poison = set()
        self.poison_status = 400
        self.dimensions_override = None
        self.valid_keys = None
        self.strict_models = False
        self.refused_models = set()
        self.quota_exhausted = False
        self.on_request = None
        self.rpm = self.tpm = None
        self.window = 60.0
        self.exact_tokens = self._exact_default
        self.vectors = self._vectors_default
        # Each model its own vectors (a text's vector depends on the model asked), as two
        # real models' do: for testing a change of model. Off: one vector a text.
        self.model_vectors = False
        self.batch_delay = 1.0
        self.batch_outcome = "completed"
        self.files_status = None
        self.batch_queue_limit = None
        self.batch_max_inputs = 50_000
        self.batch_max_lines = 50_000
        self.batch_max_bytes = 200 * 1024 * 1024
        self.batch_line_failure_rate = 0.0
        self.batch_limit_refusals = 0
        self.sent = []
        self.refused_for_limits = 0
        self.tokens = 0
        self.throttled = 0
        self.requests = self.inputs = self.failures = 0
        self.max_in_flight = 0
        self.texts = []
        self.first_request_at = None
        self.files = {}
        self.batches = {}
        self.batch_texts = []

    # -- control ---------------------------------------------------------

    @property
    def vectors(self) -> str:
        """``"distinct"``: every text its own all-but-orthogonal vector (``fake_vectors``);
        ``"related"``: texts that share wording lie near each other (``related_vectors``)."""
        return self._vectors

    @vectors.setter
    def vectors(self, kind: str) -> None:
        if kind not in VECTORS:
            raise InvalidValue(f"vectors must be one of {sorted(VECTORS)}, not {kind!r}.")
        self._vectors = kind

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        retry_after: float | None = None,
        hang: float = 0.0,
    ) -> None:
        """The next ``count`` requests answer ``status`` (or hang ``hang`` seconds first)."""
        self._embeddings.schedule((status, retry_after, hang), count)

    def reset(self) -> None:
        with self._lock:
            self._restore()
            self._embeddings.clear()

    def start(self) -> FakeEmbeddingsServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeEmbeddingsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _batch(self, batch_id: str) -> dict[str, Any] | None:
        """A batch as the API shows it, run to its end once its delay has passed."""
        return self._files.batch(batch_id)
