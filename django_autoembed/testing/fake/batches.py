"""The Files and Batch APIs: uploads, batches that end after ``batch_delay`` as
``batch_outcome`` says, and their output and error files."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .limits import MODELS, check_limits, rejected
from .protocol import Reply, api_error, parse_form
from .vectors import VECTORS, of_model

if TYPE_CHECKING:
    from .server import FakeEmbeddingsServer


class FilesAndBatches:
    """The Files and Batch APIs of ``fake``: its ``files`` and ``batches`` hold their state.

    ``lock`` is the server's; ``rng`` names the files.
    """

    def __init__(
        self, fake: FakeEmbeddingsServer, lock: threading.Lock, rng: random.Random
    ) -> None:
        self.fake = fake
        self._lock = lock
        self._random = rng

    # -- routes ------------------------------------------------------------

    def upload(self, content_type: str, raw: bytes) -> Reply:
        status = self.fake.files_status
        if status is not None:
            return Reply(status, api_error(f"injected {status}"))
        fields, filename = parse_form(content_type, raw)
        if "file" not in fields:
            return Reply(400, api_error("'file' is a required property"))
        purpose = fields.get("purpose", b"").decode()
        if purpose != "batch":
            return Reply(400, api_error(f"Invalid purpose {purpose!r}"))
        if len(fields["file"]) > self.fake.batch_max_bytes:
            return Reply(
                400,
                api_error(
                    f"File is too large ({len(fields['file'])} bytes): a batch input file "
                    f"holds at most {self.fake.batch_max_bytes} bytes."
                ),
            )
        with self._lock:
            record = self._add_file(fields["file"], filename, purpose)
        return Reply(200, {k: v for k, v in record.items() if k != "data"})

    def content(self, file_id: str) -> Reply:
        found = self.fake.files.get(file_id)
        if found is None:
            return Reply(404, api_error(f"No such File object: {file_id}"))
        return Reply(200, found["data"])

    def create(self, raw: bytes) -> Reply:
        try:
            body = json.loads(raw)
            file_id = body["input_file_id"]
        except (ValueError, KeyError, TypeError):
            return Reply(400, api_error("input_file_id is required"))
        if file_id not in self.fake.files:
            return Reply(400, api_error(f"No such file: {file_id}"))
        if body.get("endpoint") != "/v1/embeddings":
            return Reply(400, api_error("this fake batches /v1/embeddings only"))
        batch_id = f"batch_{len(self.fake.batches) + 1:06d}{random.getrandbits(32):08x}"
        ends = time.monotonic() + self.fake.batch_delay
        batch = new_batch(batch_id, file_id, body, ends=ends)
        lines = [json.loads(raw) for raw in self.fake.files[file_id]["data"].splitlines()]
        batch["_model"] = str(((lines[0] if lines else {}).get("body") or {}).get("model"))
        # Counted exactly, as the API counts a batch against the enqueued-token limit.
        batch["_tokens"] = sum(_line_tokens(line) for line in lines)
        refusal = self._refusal(batch, lines)
        self.fake.batches[batch_id] = batch
        if refusal is not None:  # the API fails such a batch in validation, at once
            batch.update(status="failed", failed_at=int(time.time()), errors=refusal)
        return Reply(200, self.batch(batch_id) or {})

    def cancel(self, batch_id: str) -> Reply:
        batch = self.fake.batches.get(batch_id)
        if batch is None:
            return Reply(404, api_error(f"No batch found with id '{batch_id}'"))
        with self._lock:
            if batch["status"] in ("validating", "in_progress"):
                batch.update(status="cancelled", cancelled_at=int(time.time()))
        return Reply(200, self.batch(batch_id) or {})

    def enqueued(self, model: str) -> int:
        """Tokens of ``model`` held by batches not yet over, as the API counts them."""
        held = 0
        for batch_id in list(self.fake.batches):
            shown = self.batch(batch_id) or {}
            batch = self.fake.batches[batch_id]
            if shown.get("status") in ("validating", "in_progress") and batch["_model"] == model:
                held += batch["_tokens"]
        return held

    def _refusal(self, batch: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Why the API would fail this batch in validation (its limits), or None."""
        fake = self.fake
        inputs = sum(len(_inputs(line)) for line in lines)
        if len(lines) > fake.batch_max_lines:
            return _errors(
                "too_many_requests",
                f"The batch input file has {len(lines)} requests; at most "
                f"{fake.batch_max_lines} are allowed.",
            )
        if inputs > fake.batch_max_inputs:
            return _errors(
                "too_many_inputs",
                f"The batch holds {inputs} embedding inputs; at most {fake.batch_max_inputs} "
                "are allowed across all its requests.",
            )
        limit = fake.batch_queue_limit
        if limit is not None and self.enqueued(batch["_model"]) + batch["_tokens"] > limit:
            fake.batch_limit_refusals += 1
            return _errors(
                "token_limit_exceeded",
                f"Enqueued token limit reached for {batch['_model']} in organization "
                f"org-fake. Limit: {limit:,} enqueued tokens. Please try submitting fewer "
                "tokens or wait until your previous batches have completed.",
            )
        return None

    def show(self, batch_id: str) -> Reply:
        batch = self.batch(batch_id)
        if batch is None:
            return Reply(404, api_error(f"No batch found with id '{batch_id}'"))
        return Reply(200, batch)

    def listing(self) -> Reply:
        data = [self.batch(b) for b in reversed(list(self.fake.batches))]
        return Reply(200, {"object": "list", "data": data, "has_more": False})

    # -- state -------------------------------------------------------------

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """A batch as the API shows it, run to its end once its delay has passed."""
        batch = self.fake.batches.get(batch_id)
        if batch is None:
            return None
        with self._lock:
            if batch["status"] in ("validating", "in_progress"):
                if time.monotonic() >= batch["_ends"]:
                    self._run(batch)
                else:
                    batch["status"] = "in_progress"
                    batch["in_progress_at"] = batch["in_progress_at"] or int(time.time())
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        files = self.fake.files
        file_id = f"file-{len(files) + 1:06d}{self._random.getrandbits(32):08x}"
        files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "data": data,
        }
        return files[file_id]

    def _run(self, batch: dict[str, Any]) -> None:
        """Answer every request line as the embeddings endpoint would, or end as told."""
        fake = self.fake
        now = int(time.time())
        if fake.batch_outcome in ("cancelled", "failed"):
            batch.update(ended_unrun(fake.batch_outcome, now))
            return
        lines = [json.loads(raw) for raw in fake.files[batch["input_file_id"]]["data"].splitlines()]
        done = len(lines) // 2 if fake.batch_outcome == "expired" else len(lines)
        output, errors = [], []
        for n, line in enumerate(lines):
            if n >= done:
                errors.append(expired_line(n, line.get("custom_id")))
                continue
            if (
                fake.batch_line_failure_rate
                and self._random.random() < fake.batch_line_failure_rate
            ):
                errors.append(failed_line(n, line.get("custom_id")))
                continue
            item, texts = answer_line(
                n, line, fake.poison, VECTORS[fake.vectors], fake.model_vectors
            )
            if texts is None:
                errors.append(item)
            else:
                fake.batch_texts.extend(texts)
                output.append(item)
        # The API writes a batch's answers in no particular order: custom_id says which is which.
        self._random.shuffle(output)
        self._random.shuffle(errors)
        out = self._add_file(jsonl(output), "output.jsonl", "batch_output") if output else None
        err = self._add_file(jsonl(errors), "errors.jsonl", "batch_output") if errors else None
        status = "expired" if fake.batch_outcome == "expired" else "completed"
        batch.update(
            status=status,
            output_file_id=out["id"] if out else None,
            error_file_id=err["id"] if err else None,
            request_counts={"total": len(lines), "completed": len(output), "failed": len(errors)},
            **{f"{status}_at": now},
        )


def new_batch(batch_id: str, file_id: str, body: dict[str, Any], *, ends: float) -> dict[str, Any]:
    """A batch just created from ``body``; the keys starting with ``_`` are the fake's own."""
    now = int(time.time())
    return {
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
        "_ends": ends,
    }


def ended_unrun(outcome: str, now: int) -> dict[str, Any]:
    """What a batch that ends ``outcome`` ("cancelled" or "failed") before running shows."""
    if outcome == "cancelled":
        return {"status": "cancelled", "cancelled_at": now}
    return {
        "status": "failed",
        "failed_at": now,
        "errors": {
            "object": "list",
            "data": [{"code": "invalid_request", "message": "injected failure", "line": 1}],
        },
    }


def _inputs(line: dict[str, Any]) -> list[str]:
    texts = (line.get("body") or {}).get("input") or []
    return [texts] if isinstance(texts, str) else list(texts)


def _line_tokens(line: dict[str, Any]) -> int:
    texts = [t for t in _inputs(line) if isinstance(t, str)]
    tokens, _ = check_limits(texts) if texts else (0, None)
    return tokens


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"code": code, "message": message, "line": None}]}


def failed_line(n: int, custom_id: Any) -> dict[str, Any]:
    """A request line the batch failed on (in the error file, as a 500)."""
    body = {
        "error": {
            "message": "The server had an error processing your request.",
            "type": "server_error",
        }
    }
    return _response_line(n, custom_id, 500, body)


def expired_line(n: int, custom_id: Any) -> dict[str, Any]:
    return {
        "id": f"batch_req_{n}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "batch_expired", "message": "not run in time"},
    }


def answer_line(
    n: int,
    line: dict[str, Any],
    poison: set[str],
    vectorize: Callable[[list[str], int], np.ndarray],
    model_vectors: bool = False,
) -> tuple[dict[str, Any], list[str] | None]:
    """(the output line for request line ``n``, its texts if embedded or None if refused)."""
    body = line.get("body") or {}
    texts = body.get("input") or []
    texts = [texts] if isinstance(texts, str) else list(texts)
    tokens, refusal = check_limits(texts)
    if refusal or rejected(texts, poison):
        answer = api_error(refusal or "input rejected (poison or empty)")
        return _response_line(n, line.get("custom_id"), 400, answer), None
    dims = int(body.get("dimensions") or MODELS.get(str(body.get("model")), (1536,))[0])
    model = str(body.get("model")) if model_vectors else None
    vectors = vectorize(of_model(texts, model), dims).astype("<f4")
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
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    answer = {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    return _response_line(n, line.get("custom_id"), 200, answer), texts


def _response_line(n: int, custom_id: Any, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"batch_req_{n}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"req_{n}", "body": body},
        "error": None,
    }


def jsonl(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(i) + "\n" for i in items).encode()
