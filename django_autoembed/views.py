"""The push endpoint: pg_net POSTs batches of jobs here, as in the Supabase guide."""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import conf, queue
from .processing import JOB_KEYS, Processor

logger = logging.getLogger(__name__)

MAX_KEY = 2**63 - 1


def _error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for key, value in headers.items():
        response[key.replace("_", "-")] = value
    return response


def validate_jobs(payload: Any) -> list[dict[str, Any]]:
    """The request body as a list of jobs; ValueError saying what is wrong."""
    if not isinstance(payload, list):
        raise ValueError("body must be a JSON list of jobs")
    seen: set[int] = set()
    for n, job in enumerate(payload):
        if not isinstance(job, dict):
            raise ValueError(f"job {n} is not an object")
        missing = [k for k in ("jobId", "id", *JOB_KEYS) if k not in job]
        if missing:
            raise ValueError(f"job {n} lacks {', '.join(missing)}")
        job_id = job["jobId"]
        if not isinstance(job_id, int) or isinstance(job_id, bool) or not 0 < job_id <= MAX_KEY:
            raise ValueError(f"job {n}: jobId must be a positive 64-bit integer")
        if job_id in seen:
            raise ValueError(f"job {n}: jobId {job_id} appears twice")
        seen.add(job_id)
        if not isinstance(job["id"], (int, str)) or isinstance(job["id"], bool):
            raise ValueError(f"job {n}: id must be an integer or a string")
        if isinstance(job["id"], int) and abs(job["id"]) > MAX_KEY:
            raise ValueError(f"job {n}: id is out of range")
        for key in JOB_KEYS:
            if not isinstance(job[key], str) or not job[key] or len(job[key]) > 255:
                raise ValueError(f"job {n}: {key} must be a non-empty string of at most 255 characters")
    return payload


@csrf_exempt
def embed(request: HttpRequest) -> JsonResponse:
    token = conf.get("ENDPOINT_TOKEN")
    if not token:
        return _error(404, "endpoint disabled: set AUTOEMBED['ENDPOINT_TOKEN'] to enable it")
    if request.method != "POST":
        return _error(405, "use POST", Allow="POST")
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not hmac.compare_digest(given.encode(), str(token).encode()):
        return _error(401, "missing or wrong bearer token", WWW_Authenticate="Bearer")
    if request.content_type != "application/json":
        return _error(400, "Content-Type must be application/json")
    limit = int(conf.get("ENDPOINT_MAX_BODY"))
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _error(413, f"body over {limit} bytes; send fewer jobs per request")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _error(413, f"body over {limit} bytes; send fewer jobs per request")
    try:
        jobs = validate_jobs(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"invalid jobs: {exc}")

    deadline = time.monotonic() + float(conf.get("ENDPOINT_TIME_BUDGET"))
    with connection.cursor() as cursor:
        stored = queue.lookup(cursor, [j["jobId"] for j in jobs])
    messages: dict[int, queue.Message] = {}
    for job in jobs:
        message = stored.get(job["jobId"])
        if message is None or not _names_row(message.body, job):
            job_body = {k: job[k] for k in ("id", *JOB_KEYS)}
            message = queue.Message(job["jobId"], message.read_ct if message else 1, job_body)
        messages[job["jobId"]] = message
    result = Processor().process(list(messages.values()), deadline=deadline)

    errors: dict[tuple[int, str], str] = {(m, str(pk)): e for m, pk, e in result.failed}
    completed, failed = [], []
    for job in jobs:
        error = errors.get((job["jobId"], str(job["id"])))
        if error is None:
            completed.append(job)
        else:
            failed.append({**job, "error": error})
    logger.info("Endpoint: %d jobs done, %d failed", len(completed), len(failed),
                extra={"completed": len(completed), "failed": len(failed)})
    response = JsonResponse({"completedJobs": completed, "failedJobs": failed})
    response["X-Completed-Jobs"] = str(len(completed))
    response["X-Failed-Jobs"] = str(len(failed))
    return response


def _names_row(body: Any, job: dict[str, Any]) -> bool:
    if not isinstance(body, dict) or any(body.get(k) != job[k] for k in JOB_KEYS):
        return False
    ids = body.get("ids") if "ids" in body else [body.get("id")]
    return isinstance(ids, list) and any(str(i) == str(job["id"]) for i in ids)
