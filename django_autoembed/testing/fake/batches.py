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
from .vectors import VECTORS

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
        self.fake.batches[batch_id] = new_batch(batch_id, file_id, body, ends=ends)
        return Reply(200, self.batch(batch_id) or {})

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
            item, texts = answer_line(n, line, fake.poison, VECTORS[fake.vectors])
            if texts is None:
                errors.append(item)
            else:
                fake.batch_texts.extend(texts)
                output.append(item)
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
    vectors = vectorize(texts, dims).astype("<f4")
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
