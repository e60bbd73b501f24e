"""A loopback server speaking the OpenAI embeddings protocol, for tests and benchmarks.

Vectors are deterministic unit vectors derived from the text (same text, same
vector): by default all but orthogonal to each other; with ``vectors="related"``, near
each other for texts that share wording, as real embeddings are. Latency and failures are
set on the running server::

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

from ..exceptions import InvalidValue

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


# ``related_vectors``: character trigrams hashed into this many buckets, each bucket a row of
# the pool, plus this much of the text's own ``fake_vectors`` direction.
_TRIGRAM_BUCKETS = 256
_OWN = 0.45


def related_vectors(texts: list[str], dimensions: int) -> np.ndarray:
    """Unit vectors in which texts that share wording lie near each other, as real embeddings do.

    A text's lowercased UTF-8 trigrams are counted into buckets; the square roots of the
    counts, less their mean, weigh the pool's rows; a share of the text's ``fake_vectors``
    direction is added so that every text keeps a vector of its own. Same text, same vector.
    On the long-document bench's prose this puts consecutive 512-token chunks of a document
    at a cosine of ~0.56 and chunks of unrelated documents at ~0.37; all-MiniLM-L6-v2 gives
    0.54 and 0.33 on the same chunks. (``fake_vectors`` gives ~0.00 for both: as far apart
    as vectors can be, the hardest case for an approximate search; pgvector's HNSW index at
    its defaults finds 0.82 of the true ten nearest among 52,000 of them, 0.98 of these.)
    """
    if not texts:
        return np.empty((0, dimensions), dtype=np.float32)
    raw = [t.lower().encode("utf-8") for t in texts]
    lengths = np.fromiter((len(b) for b in raw), dtype=np.int64, count=len(raw))
    data = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.uint32)
    owner = np.repeat(np.arange(len(texts)), lengths)
    if len(data) >= 3:
        hashed = ((data[:-2] * 961 + data[1:-1] * 31 + data[2:]) * np.uint32(2654435761)) >> 16
        inside = owner[:-2] == owner[2:]  # trigrams that do not straddle two texts
        cells = owner[:-2][inside] * _TRIGRAM_BUCKETS + hashed[inside] % _TRIGRAM_BUCKETS
        counts = np.bincount(cells, minlength=len(texts) * _TRIGRAM_BUCKETS)
    else:
        counts = np.zeros(len(texts) * _TRIGRAM_BUCKETS, dtype=np.int64)
    weights = np.sqrt(counts.reshape(len(texts), _TRIGRAM_BUCKETS).astype(np.float32))
    weights -= weights.mean(axis=1, keepdims=True)
    shared = weights @ _pool(dimensions)[:_TRIGRAM_BUCKETS]
    norms = np.linalg.norm(shared, axis=1, keepdims=True)
    shared = np.divide(shared, norms, out=np.zeros_like(shared), where=norms > 0)
    v = shared + _OWN * fake_vectors(texts, dimensions)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


# What the server's ``vectors`` setting names.
VECTORS: dict[str, Callable[[list[str], int], np.ndarray]] = {
    "distinct": fake_vectors,
    "related": related_vectors,
}


def fake_vector(text: str, dimensions: int) -> np.ndarray:
    """The unit vector the fake server returns for ``text``."""
    return fake_vectors([text], dimensions)[0]


class _Server(ThreadingHTTPServer):
    # A real API takes a burst of new connections; the standard library's backlog of 5
    # refuses some of them when dozens of requests start at once.
    request_queue_size = 1024
    daemon_threads = True


class FakeEmbeddingsServer:
    """Threaded HTTP server on 127.0.0.1; ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        port: int = 0,
        exact_tokens: bool = True,
        vectors: str = "distinct",
    ) -> None:
        self.latency = latency
        self._exact_default = exact_tokens
        self.vectors = vectors
        self._vectors_default = self.vectors
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
        # Models this account may not use (404 model_not_found, as for a model of a higher
        # tier), and whether its credit is spent (429 insufficient_quota: billing, not a rate).
        self.refused_models: set[str] = set()
        self.quota_exhausted = False
        # Called with each request's inputs while the client waits for the answer:
        # a test's way to change the database between a worker's read and its write.
        self.on_request: Callable[[list[str]], None] | None = None
        # Rate limits per minute (None: none), answered with 429 and x-ratelimit-* headers.
        self.rpm: int | None = None
        self.tpm: int | None = None
        self._window: list[tuple[float, int]] = []  # (time, tokens) of the last minute's requests
        self.window = 60.0  # the "minute" of the per-minute limits, in seconds (shorter in tests)
        # (time.monotonic(), tokens) of each request let past the limits
        self.sent: list[tuple[float, int]] = []
        self.refused_for_limits = 0  # requests refused with a 400 for the API's limits
        # Count every request's tokens exactly, as the API bills them (``usage``); off, short
        # texts are estimated at 4 bytes a token, which spares a bench the tokenizer's CPU
        # (the real API's tokenizer runs on its own machines, not beside the worker). With
        # per-minute limits set, counting is always exact.
        self.exact_tokens = exact_tokens
        self.tokens = 0  # tokens of the requests answered with vectors
        self.throttled = 0  # requests answered 429 for the per-minute limits
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
        # The Files and Batch APIs: uploaded files, batches, and how batches end.
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_delay = 1.0  # seconds from creation to the end of a batch
        # How batches end: "completed", "expired" (half done), "failed" or "cancelled" (none).
        self.batch_outcome = "completed"
        self.files_status: int | None = None  # uploads answer this error status (None: work)
        self.batch_texts: list[str] = []  # inputs embedded through batches
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

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
            self.refused_models = set()
            self.quota_exhausted = False
            self.on_request = None
            self.rpm = self.tpm = None
            self._window = []
            self.window = 60.0
            self.sent = []
            self.refused_for_limits = 0
            self.exact_tokens = self._exact_default
            self.vectors = self._vectors_default
            self.tokens = 0
            self.throttled = 0
            self._scheduled.clear()
            self.requests = self.inputs = self.failures = 0
            self.max_in_flight = 0  # most requests the server was answering at once
            self.texts = []
            self.first_request_at = None
            self.files = {}
            self.batches = {}
            self.batch_delay = 1.0
            self.batch_outcome = "completed"
            self.files_status = None
            self.batch_texts = []

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

    # -- the Files and Batch APIs ----------------------------------------------

    def _file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        with self._lock:
            return self._add_file(data, filename, purpose)

    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:06d}{self._random.getrandbits(32):08x}"
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "data": data,
        }
        return self.files[file_id]

    def _batch(self, batch_id: str) -> dict[str, Any] | None:
        """A batch as the API shows it, run to its end once its delay has passed."""
        batch = self.batches.get(batch_id)
        if batch is None:
            return None
        with self._lock:
            if batch["status"] in ("validating", "in_progress"):
                if time.monotonic() >= batch["_ends"]:
                    self._run_batch(batch)
                else:
                    batch["status"] = "in_progress"
                    batch["in_progress_at"] = batch["in_progress_at"] or int(time.time())
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _run_batch(self, batch: dict[str, Any]) -> None:
        """Answer every request line as the embeddings endpoint would, or end as told."""
        now = int(time.time())
        if self.batch_outcome == "cancelled":
            batch.update(status="cancelled", cancelled_at=now)
            return
        if self.batch_outcome == "failed":
            batch.update(
                status="failed",
                failed_at=now,
                errors={
                    "object": "list",
                    "data": [{"code": "invalid_request", "message": "injected failure", "line": 1}],
                },
            )
            return
        lines = [json.loads(raw) for raw in self.files[batch["input_file_id"]]["data"].splitlines()]
        done = len(lines) // 2 if self.batch_outcome == "expired" else len(lines)
        output, errors = [], []
        for n, line in enumerate(lines):
            custom = line.get("custom_id")
            if n >= done:
                errors.append(
                    {
                        "id": f"batch_req_{n}",
                        "custom_id": custom,
                        "response": None,
                        "error": {"code": "batch_expired", "message": "not run in time"},
                    }
                )
                continue
            body = line.get("body") or {}
            texts = body.get("input") or []
            texts = [texts] if isinstance(texts, str) else list(texts)
            tokens, refusal = _check_limits(texts)
            poisoned = any(p in t for t in texts for p in self.poison) or any(not t for t in texts)
            if refusal or poisoned:
                errors.append(
                    {
                        "id": f"batch_req_{n}",
                        "custom_id": custom,
                        "response": {
                            "status_code": 400,
                            "request_id": f"req_{n}",
                            "body": api_error(refusal or "input rejected (poison or empty)"),
                        },
                        "error": None,
                    }
                )
                continue
            dims = int(body.get("dimensions") or MODELS.get(str(body.get("model")), (1536,))[0])
            vectors = VECTORS[self.vectors](texts, dims).astype("<f4")
            self.batch_texts.extend(texts)
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(v.tobytes()).decode()
                    if body.get("encoding_format") == "base64"
                    else v.tolist(),
                }
                for i, v in enumerate(vectors)
            ]
            output.append(
                {
                    "id": f"batch_req_{n}",
                    "custom_id": custom,
                    "response": {
                        "status_code": 200,
                        "request_id": f"req_{n}",
                        "body": {
                            "object": "list",
                            "data": data,
                            "model": body.get("model"),
                            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                        },
                    },
                    "error": None,
                }
            )

        def jsonl(items: list[dict[str, Any]]) -> bytes:
            return "".join(json.dumps(i) + "\n" for i in items).encode()

        out = self._add_file(jsonl(output), "output.jsonl", "batch_output") if output else None
        err = self._add_file(jsonl(errors), "errors.jsonl", "batch_output") if errors else None
        status = "expired" if self.batch_outcome == "expired" else "completed"
        batch.update(
            status=status,
            output_file_id=out["id"] if out else None,
            error_file_id=err["id"] if err else None,
            request_counts={"total": len(lines), "completed": len(output), "failed": len(errors)},
            **{f"{status}_at": now},
        )

    # -- serving -----------------------------------------------------------

    def _rate_limited(self, tokens: int) -> tuple[str | None, dict[str, str]]:
        """(a 429's message, or None when the request may go; the x-ratelimit-* headers the
        answer carries), for the per-minute limits over a sliding minute."""
        if self.rpm is None and self.tpm is None:
            return None, {}
        now = time.monotonic()
        with self._lock:
            self._window = [(t, n) for t, n in self._window if now - t < self.window]
            used_requests = len(self._window)
            used_tokens = sum(n for _, n in self._window)
            over_requests = self.rpm is not None and used_requests + 1 > self.rpm
            over_tokens = self.tpm is not None and used_tokens + tokens > self.tpm
            if not (over_requests or over_tokens):
                self._window.append((now, tokens))
                used_requests, used_tokens = used_requests + 1, used_tokens + tokens
            else:
                self.throttled += 1
            reset = self.window - (now - self._window[0][0]) if self._window else 1.0
        headers = {
            "x-ratelimit-limit-requests": str(self.rpm or ""),
            "x-ratelimit-remaining-requests": str(max(0, (self.rpm or 0) - used_requests)),
            "x-ratelimit-reset-requests": f"{reset:.0f}s",
            "x-ratelimit-limit-tokens": str(self.tpm or ""),
            "x-ratelimit-remaining-tokens": str(max(0, (self.tpm or 0) - used_tokens)),
            "x-ratelimit-reset-tokens": f"{reset:.0f}s",
        }
        if not (over_requests or over_tokens):
            return None, headers
        what = "requests" if over_requests else "tokens"
        limit = self.rpm if over_requests else self.tpm
        message = f"Rate limit reached for {what} per min: Limit {limit}. Please try again in "
        return f"{message}{reset:.0f}s.", {"retry-after": f"{max(1, round(reset))}", **headers}

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

            def _refused_key(self) -> bool:
                header = self.headers.get("Authorization", "")
                key = header[7:] if header.startswith("Bearer ") else ""
                if key and (fake.valid_keys is None or key in fake.valid_keys):
                    return False
                self._send(
                    401,
                    api_error(
                        f"Incorrect API key provided: {key[:3]}***{key[-4:]}."
                        if key
                        else "You didn't provide an API key.",
                        code="invalid_api_key",
                    ),
                )
                return True

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if self._refused_key():
                    return None
                parts = path.split("/")
                if len(parts) == 5 and path.startswith("/v1/files/") and parts[4] == "content":
                    found = fake.files.get(parts[3])
                    if found is None:
                        return self._send(404, api_error(f"No such File object: {parts[3]}"))
                    return self._send(200, found["data"])
                if len(parts) == 4 and path.startswith("/v1/batches/"):
                    batch = fake._batch(parts[3])
                    if batch is None:
                        return self._send(404, api_error(f"No batch found with id '{parts[3]}'"))
                    return self._send(200, batch)
                if path == "/v1/batches":
                    data = [fake._batch(b) for b in reversed(list(fake.batches))]
                    return self._send(200, {"object": "list", "data": data, "has_more": False})
                return self._send(404, api_error(f"Invalid URL (GET {self.path})"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/files":
                    return None if self._refused_key() else self._upload(raw)
                if path == "/v1/batches":
                    return None if self._refused_key() else self._create_batch(raw)
                if path != "/v1/embeddings":
                    return self._send(404, api_error(f"Invalid URL (POST {self.path})"))
                fake._count_request()
                if self._refused_key():
                    return None
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
                if (fake.strict_models and known is None) or model in fake.refused_models:
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
                if fake.quota_exhausted:
                    return self._send(
                        429,
                        api_error(
                            "You exceeded your current quota, please check your plan and "
                            "billing details.",
                            type_="insufficient_quota",
                            code="insufficient_quota",
                        ),
                    )
                exact = fake.exact_tokens or fake.tpm is not None
                tokens, refusal = _check_limits(texts, exact=exact)
                if refusal is not None:
                    with fake._lock:
                        fake.refused_for_limits += 1
                    return self._send(400, api_error(refusal, param="input"))
                refusal429, limit_headers = fake._rate_limited(tokens)
                if refusal429 is not None:
                    return self._send(
                        429,
                        api_error(refusal429, type_="requests", code="rate_limit_exceeded"),
                        limit_headers,
                    )
                with fake._lock:
                    fake.sent.append((time.monotonic(), tokens))
                    fake._in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
                try:
                    self._answer(body, texts, dims, tokens, limit_headers)
                finally:
                    with fake._lock:
                        fake._in_flight -= 1

            def _upload(self, raw: bytes) -> None:
                from email.parser import BytesParser
                from email.policy import HTTP

                if fake.files_status is not None:
                    return self._send(fake.files_status, api_error(f"injected {fake.files_status}"))
                head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
                form = BytesParser(policy=HTTP).parsebytes(head + raw)
                fields: dict[str, Any] = {}
                filename = "upload.jsonl"
                for part in form.iter_parts() if form.is_multipart() else []:
                    name = part.get_param("name", header="content-disposition")
                    fields[str(name)] = part.get_payload(decode=True) or b""
                    filename = part.get_filename() or filename
                if "file" not in fields:
                    return self._send(400, api_error("'file' is a required property"))
                purpose = fields.get("purpose", b"").decode()
                if purpose != "batch":
                    return self._send(400, api_error(f"Invalid purpose {purpose!r}"))
                record = fake._file(fields["file"], filename, purpose)
                return self._send(200, {k: v for k, v in record.items() if k != "data"})

            def _create_batch(self, raw: bytes) -> None:
                try:
                    body = json.loads(raw)
                    file_id = body["input_file_id"]
                except (ValueError, KeyError, TypeError):
                    return self._send(400, api_error("input_file_id is required"))
                if file_id not in fake.files:
                    return self._send(400, api_error(f"No such file: {file_id}"))
                if body.get("endpoint") != "/v1/embeddings":
                    return self._send(400, api_error("this fake batches /v1/embeddings only"))
                now = int(time.time())
                batch_id = f"batch_{len(fake.batches) + 1:06d}{random.getrandbits(32):08x}"
                fake.batches[batch_id] = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": "/v1/embeddings",
                    "errors": None,
                    "input_file_id": file_id,
                    "completion_window": body.get("completion_window", "24h"),
                    "status": "validating",
                    "output_file_id": None,
                    "error_file_id": None,
                    "created_at": now,
                    "in_progress_at": None,
                    "expires_at": now + 86400,
                    "completed_at": None,
                    "failed_at": None,
                    "expired_at": None,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                    "metadata": body.get("metadata") or {},
                    "_ends": time.monotonic() + fake.batch_delay,
                }
                return self._send(200, fake._batch(batch_id) or {})

            def _answer(
                self,
                body: dict[str, Any],
                texts: list[str],
                dims: int,
                tokens: int,
                limit_headers: dict[str, str],
            ) -> None:
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
                    fake.tokens += tokens
                out_dims = fake.dimensions_override or dims
                vectors = VECTORS[fake.vectors](texts, out_dims).astype("<f4")
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
                        f'"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}'
                    ).encode()
                    return self._send(200, payload, limit_headers)
                self._send(
                    200,
                    {
                        "object": "list",
                        "model": body.get("model", "fake"),
                        "data": [
                            {"object": "embedding", "index": i, "embedding": v.tolist()}
                            for i, v in enumerate(vectors)
                        ],
                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                    },
                    limit_headers,
                )

        return Handler


def _count(text: str) -> int:
    from ..providers.openai import encoding

    return len(encoding().encode_ordinary(text))


def _check_limits(texts: list[str], *, exact: bool = True) -> tuple[int, str | None]:
    """(the request's tokens, why the real API would refuse it or None).

    With ``exact``, every text is counted with the tokenizer, as the API bills it;
    without, a short text is estimated at 4 bytes a token, and counted only where its
    size could break a limit (a token is at least one byte).
    """
    if len(texts) > MAX_INPUTS:
        return 0, f"'$.input' is invalid: at most {MAX_INPUTS} inputs a request, got {len(texts)}."
    sizes = [len(text.encode("utf-8")) for text in texts]
    if exact:
        from ..providers.openai import encoding

        counts = [len(ids) for ids in encoding().encode_ordinary_batch(texts)]
    else:
        counts = [
            _count(t) if n > MAX_INPUT_TOKENS else n // 4 + 1
            for t, n in zip(texts, sizes, strict=True)
        ]
    for n, tokens in enumerate(counts):
        if tokens > MAX_INPUT_TOKENS:
            return 0, (
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                f"you requested {tokens} tokens ({tokens} in your prompt; input {n}). Please "
                "reduce your prompt."
            )
    total = sum(counts)
    if not exact and sum(sizes) > MAX_REQUEST_TOKENS:
        total = sum(_count(text) for text in texts)
    if total > MAX_REQUEST_TOKENS:
        return total, f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request."
    return total, None
