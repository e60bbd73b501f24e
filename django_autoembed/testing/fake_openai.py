"""A loopback server speaking the OpenAI embeddings protocol, for tests and benchmarks.

Vectors are deterministic unit vectors derived from the text (same text, same
vector). Latency and failures are set on the running server::

    with FakeEmbeddingsServer() as api:
        AUTOEMBED = {"BASE_URL": api.base_url, "API_KEY": "test", ...}
        api.latency = 0.2
        api.fail_next(3, status=429, retry_after=1)
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

_POOL_SIZE = 1024
_pools: dict[int, np.ndarray] = {}

# The real API's limits, enforced as it enforces them: a request that breaks one is refused
# whole with a 400. Tokens are counted with cl100k_base, the embedding models' tokenizer.
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000

# Models the fake knows, with the most dimensions each gives and whether it takes `dimensions`.
MODELS = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}


def api_error(
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An error body in the shape the OpenAI API answers with."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _pool(dimensions: int) -> np.ndarray:
    if dimensions not in _pools:
        _pools[dimensions] = (
            np.random.default_rng(dimensions)
            .standard_normal((_POOL_SIZE, dimensions))
            .astype(np.float32)
        )
    return _pools[dimensions]


def fake_vectors(texts: list[str], dimensions: int) -> np.ndarray:
    """The unit vectors the fake server returns for ``texts``, one row each.

    Each text picks three rows of a fixed random pool by its hash (a billion
    combinations), so vectors are deterministic, distinct and cheap to make.
    """
    if not texts:
        return np.empty((0, dimensions), dtype=np.float32)
    digests = (
        np.frombuffer(
            b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=6).digest() for t in texts),
            dtype="<u2",
        ).reshape(len(texts), 3)
        % _POOL_SIZE
    )
    pool = _pool(dimensions)
    v = pool[digests[:, 0]] + 0.7 * pool[digests[:, 1]] + 0.49 * pool[digests[:, 2]]
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def fake_vector(text: str, dimensions: int) -> np.ndarray:
    """The unit vector the fake server returns for ``text``."""
    return fake_vectors([text], dimensions)[0]


class FakeEmbeddingsServer:
    """Threaded HTTP server on 127.0.0.1; ``base_url`` ends in ``/v1``."""

    def __init__(self, *, latency: float = 0.0, port: int = 0) -> None:
        self.latency = latency
        self.failure_rate = 0.0
        self.failure_statuses: tuple[int, ...] = (500, 429)
        self.retry_after: float | None = None
        self.hang_seconds = 0.0
        self.poison: set[str] = set()  # inputs containing these substrings are refused
        self.poison_status = 400  # with this status (a 500: a server that chokes on them)
        self.dimensions_override: int | None = None
        # Keys the fake accepts (None: any non-empty key), and whether unknown models are refused.
        self.valid_keys: set[str] | None = None
        self.strict_models = False
        # Called with each request's inputs while the client waits for the answer:
        # a test's way to change the database between a worker's read and its write.
        self.on_request: Callable[[list[str]], None] | None = None
        # Rate limits per minute (None: none), answered with 429 and x-ratelimit-* headers.
        self.rpm: int | None = None
        self.tpm: int | None = None
        self._window: list[tuple[float, int]] = []  # (time, tokens) of the last minute's requests
        self.refused_for_limits = 0  # requests refused with a 400 for the API's limits
        self.tokens = 0
        self._scheduled: list[tuple[int, float | None, float]] = []
        self._lock = threading.Lock()
        self._random = random.Random(1234)
        self.requests = 0
        self.inputs = 0
        self._in_flight = 0
        self.max_in_flight = 0
        self.failures = 0
        self.texts: list[str] = []
        self.first_request_at: float | None = None  # time.perf_counter() of the first request
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------

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
        with self._lock:
            self._scheduled.extend([(status, retry_after, hang)] * count)

    def reset(self) -> None:
        with self._lock:
            self.latency = 0.0
            self.failure_rate = 0.0
            self.retry_after = None
            self.hang_seconds = 0.0
            self.poison = set()
            self.poison_status = 400
            self.dimensions_override = None
            self.valid_keys = None
            self.strict_models = False
            self.on_request = None
            self.rpm = self.tpm = None
            self._window = []
            self.refused_for_limits = 0
            self.tokens = 0
            self._scheduled.clear()
            self.requests = self.inputs = self.failures = 0
            self.max_in_flight = 0  # most requests the server was answering at once
            self.texts = []
            self.first_request_at = None

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

    # -- serving -----------------------------------------------------------

    def _rate_limited(self, tokens: int) -> tuple[str, dict[str, str]] | None:
        """A 429's message and headers when this request would break a per-minute limit."""
        if self.rpm is None and self.tpm is None:
            return None
        now = time.monotonic()
        with self._lock:
            self._window = [(t, n) for t, n in self._window if now - t < 60]
            used_requests = len(self._window)
            used_tokens = sum(n for _, n in self._window)
            over_requests = self.rpm is not None and used_requests + 1 > self.rpm
            over_tokens = self.tpm is not None and used_tokens + tokens > self.tpm
            if not (over_requests or over_tokens):
                self._window.append((now, tokens))
                return None
            reset = 60 - (now - self._window[0][0]) if self._window else 1.0
        headers = {
            "retry-after": f"{max(1, round(reset))}",
            "x-ratelimit-limit-requests": str(self.rpm or ""),
            "x-ratelimit-remaining-requests": str(max(0, (self.rpm or 0) - used_requests)),
            "x-ratelimit-reset-requests": f"{reset:.0f}s",
            "x-ratelimit-limit-tokens": str(self.tpm or ""),
            "x-ratelimit-remaining-tokens": str(max(0, (self.tpm or 0) - used_tokens)),
            "x-ratelimit-reset-tokens": f"{reset:.0f}s",
        }
        what = "requests" if over_requests else "tokens"
        limit = self.rpm if over_requests else self.tpm
        message = f"Rate limit reached for {what} per min: Limit {limit}. Please try again in "
        return f"{message}{reset:.0f}s.", headers

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1
            if self.first_request_at is None:
                self.first_request_at = time.perf_counter()

    def _decide_failure(self) -> tuple[int, float | None, float] | None:
        with self._lock:
            if self._scheduled:
                return self._scheduled.pop(0)
            if self.failure_rate and self._random.random() < self.failure_rate:
                status = self._random.choice(self.failure_statuses)
                return status, self.retry_after if status == 429 else None, 0.0
        if self.hang_seconds:
            return 200, None, self.hang_seconds
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes; without this, Nagle's
                # algorithm and delayed ACKs add 40 ms to every small response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def _send(
                self,
                status: int,
                payload: dict[str, Any] | bytes,
                headers: dict[str, str] | None = None,
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/embeddings":
                    return self._send(404, api_error(f"Invalid URL (POST {self.path})"))
                fake._count_request()
                header = self.headers.get("Authorization", "")
                key = header[7:] if header.startswith("Bearer ") else ""
                if not key or (fake.valid_keys is not None and key not in fake.valid_keys):
                    return self._send(
                        401,
                        api_error(
                            f"Incorrect API key provided: {key[:3]}***{key[-4:]}."
                            if key
                            else "You didn't provide an API key.",
                            code="invalid_api_key",
                        ),
                    )
                try:
                    body = json.loads(raw)
                    texts = body["input"]
                    texts = [texts] if isinstance(texts, str) else list(texts)
                    model = str(body.get("model"))
                    dims = int(body.get("dimensions") or MODELS.get(model, (1536, True))[0])
                except (ValueError, KeyError, TypeError):
                    return self._send(
                        400, api_error("We could not parse the JSON body of your request.")
                    )
                known = MODELS.get(model)
                if fake.strict_models and known is None:
                    return self._send(
                        404,
                        api_error(
                            f"The model `{model}` does not exist or you do not have access to it.",
                            code="model_not_found",
                        ),
                    )
                if known and "dimensions" in body and (not known[1] or not 0 < dims <= known[0]):
                    return self._send(
                        400,
                        api_error(
                            f"This model does not support specifying dimensions {dims}.",
                            param="dimensions",
                        ),
                    )
                tokens, refusal = _check_limits(texts)
                if refusal is not None:
                    with fake._lock:
                        fake.refused_for_limits += 1
                    return self._send(400, api_error(refusal, param="input"))
                limited = fake._rate_limited(tokens)
                if limited is not None:
                    return self._send(
                        429,
                        api_error(limited[0], type_="requests", code="rate_limit_exceeded"),
                        limited[1],
                    )
                with fake._lock:
                    fake._in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
                    fake.tokens += tokens
                try:
                    self._answer(body, texts, dims)
                finally:
                    with fake._lock:
                        fake._in_flight -= 1

            def _answer(self, body: dict[str, Any], texts: list[str], dims: int) -> None:
                failure = fake._decide_failure()
                if fake.on_request is not None:
                    fake.on_request(texts)
                if fake.latency:
                    time.sleep(fake.latency)
                if failure is not None:
                    status, retry_after, hang = failure
                    if hang:
                        time.sleep(hang)
                    if status != 200:
                        with fake._lock:
                            fake.failures += 1
                        headers = (
                            {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
                        )
                        return self._send(
                            status, {"error": {"message": f"injected {status}"}}, headers
                        )
                if any(p in t for t in texts for p in fake.poison) or any(not t for t in texts):
                    with fake._lock:
                        fake.failures += 1
                    return self._send(
                        fake.poison_status,
                        {"error": {"message": "input rejected (poison or empty)"}},
                    )
                with fake._lock:
                    fake.inputs += len(texts)
                    fake.texts.extend(texts)
                out_dims = fake.dimensions_override or dims
                vectors = fake_vectors(texts, out_dims).astype("<f4")
                model = json.dumps(body.get("model", "fake"))
                if body.get("encoding_format") == "base64":
                    # Built by hand: base64 needs no escaping, and json.dumps of
                    # megabytes of it would make the fake the bottleneck of a bench.
                    items = ",".join(
                        f'{{"object":"embedding","index":{i},"embedding":"{base64.b64encode(v.tobytes()).decode()}"}}'
                        for i, v in enumerate(vectors)
                    )
                    payload = (
                        f'{{"object":"list","data":[{items}],"model":{model},'
                        f'"usage":{{"prompt_tokens":0,"total_tokens":0}}}}'
                    ).encode()
                    return self._send(200, payload)
                self._send(
                    200,
                    {
                        "object": "list",
                        "model": body.get("model", "fake"),
                        "data": [
                            {"object": "embedding", "index": i, "embedding": v.tolist()}
                            for i, v in enumerate(vectors)
                        ],
                        "usage": {"prompt_tokens": 0, "total_tokens": 0},
                    },
                )

        return Handler


def _count(text: str) -> int:
    from ..providers.openai import encoding

    return len(encoding().encode_ordinary(text))


def _check_limits(texts: list[str]) -> tuple[int, str | None]:
    """(about how many tokens the request holds, why the real API would refuse it or None).

    Counting costs CPU, so a short text is counted by its bytes where that settles the
    question (a token is at least one byte) and by the tokenizer where it does not.
    """
    if len(texts) > MAX_INPUTS:
        return 0, f"'$.input' is invalid: at most {MAX_INPUTS} inputs a request, got {len(texts)}."
    sizes = [len(text.encode("utf-8")) for text in texts]
    exact: dict[int, int] = {}
    for n, (text, size) in enumerate(zip(texts, sizes, strict=True)):
        if size > MAX_INPUT_TOKENS:
            exact[n] = tokens = _count(text)
            if tokens > MAX_INPUT_TOKENS:
                return 0, (
                    f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                    f"you requested {tokens} tokens ({tokens} in your prompt; input {n}). Please "
                    "reduce your prompt."
                )
    if sum(exact.get(n, size) for n, size in enumerate(sizes)) > MAX_REQUEST_TOKENS:
        total = sum(exact.get(n) or _count(text) for n, text in enumerate(texts))
        if total > MAX_REQUEST_TOKENS:
            return total, f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request."
        return total, None
    return sum(exact.get(n, size // 4 + 1) for n, size in enumerate(sizes)), None
