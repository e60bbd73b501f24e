"""The push endpoint: pg_net POSTs batches of jobs here, as in the Supabase guide."""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from typing import Any

import psycopg
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    OperationalError,
    connections,
    router,
    transaction,
)
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import db, incidents, queue, settings
from .declarations import registry
from .exceptions import InvalidValue, ProcessingPaused
from .hnsw.deferral import for_endpoint
from .incidents import IncidentKind
from .pauses import PauseBook
from .processing import Processor

logger = logging.getLogger(__name__)

MAX_KEY = 2**63 - 1
# Most rows one posted job may name (a packed message names up to 500).
MAX_IDS = 10_000
# Seconds the jobs of a paused batch stay hidden, so pg_cron's next ticks do not re-post them at
# once.
PAUSE_RELEASE_SECONDS = 30


def _error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for key, value in headers.items():
        response[key.replace("_", "-")] = value
    return response


def _key_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return "must be an integer or a string"
    if isinstance(value, int) and abs(value) > MAX_KEY:
        return "is out of range (64-bit)"
    return None


def validate_jobs(payload: Any) -> list[dict[str, Any]]:
    """The request body as a list of jobs; InvalidValue saying what is wrong.

    A job names one row (``"id"``, the guide's shape) or several (``"ids"``, a
    packed message posted whole), its target, and the queue message it came
    from (``"jobId"``).
    """
    if not isinstance(payload, list):
        raise InvalidValue("body must be a JSON list of jobs")
    seen: set[int] = set()
    for n, job in enumerate(payload):
        if not isinstance(job, dict):
            raise InvalidValue(f"job {n} is not an object")
        missing = [k for k in ("jobId", *queue.TARGET_KEYS) if k not in job]
        if "id" not in job and "ids" not in job:
            missing.insert(1, "id")
        if missing:
            raise InvalidValue(f"job {n} lacks {', '.join(missing)}")
        job_id = job["jobId"]
        if not isinstance(job_id, int) or isinstance(job_id, bool) or not 0 < job_id <= MAX_KEY:
            raise InvalidValue(f"job {n}: jobId must be a positive 64-bit integer")
        if job_id in seen:
            raise InvalidValue(f"job {n}: jobId {job_id} appears twice")
        seen.add(job_id)
        if "ids" in job:
            ids = job["ids"]
            if not isinstance(ids, list) or not 0 < len(ids) <= MAX_IDS:
                raise InvalidValue(f"job {n}: ids must be a list of 1 to {MAX_IDS} row keys")
            problem = next(filter(None, map(_key_problem, ids)), None)
            if problem:
                raise InvalidValue(f"job {n}: each of ids {problem}")
        elif problem := _key_problem(job["id"]):
            raise InvalidValue(f"job {n}: id {problem}")
        for key in queue.TARGET_KEYS:
            if not isinstance(job[key], str) or not job[key] or len(job[key]) > 255:
                raise InvalidValue(
                    f"job {n}: {key} must be a non-empty string of at most 255 characters"
                )
    return payload


# Row locks and provider calls must not share a request's transaction (ATOMIC_REQUESTS).
@csrf_exempt
@transaction.non_atomic_requests
def embed(request: HttpRequest) -> JsonResponse:
    token = settings.current().endpoint_token
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
    limit = int(settings.current().endpoint_max_body)
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
    except RecursionError:
        return _error(400, "invalid jobs: the JSON is nested too deeply")

    deadline = time.monotonic() + float(settings.current().endpoint_time_budget)
    errors: dict[int, str] = {}  # jobId -> why the job failed
    paused: list[ProcessingPaused] = []
    for using, mine in _by_database(jobs).items():
        refused, pauses = _process(using, mine, deadline)
        errors.update(refused)
        paused += pauses

    completed = [job for job in jobs if job["jobId"] not in errors]
    failed = [{**job, "error": errors[job["jobId"]]} for job in jobs if job["jobId"] in errors]
    logger.info(
        "Endpoint: %d jobs done, %d failed",
        len(completed),
        len(failed),
        extra={"completed": len(completed), "failed": len(failed)},
    )
    response = JsonResponse(
        {"completedJobs": completed, "failedJobs": failed}, status=503 if paused else 200
    )
    response["X-Completed-Jobs"] = str(len(completed))
    response["X-Failed-Jobs"] = str(len(failed))
    if paused:
        response["Retry-After"] = str(PAUSE_RELEASE_SECONDS)
    return response


def _by_database(jobs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Jobs by the database their table is written to (the router's db_for_write of the model)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        config = registry.match(job["table"], job["contentFunction"], job["embeddingColumn"])
        using = router.db_for_write(config.model_class) if config else DEFAULT_DB_ALIAS
        out.setdefault(using or DEFAULT_DB_ALIAS, []).append(job)
    return out


_books: dict[str, PauseBook] = {}
_books_lock = threading.Lock()


def _pauses(using: str) -> PauseBook:
    """This web process's pauses on database ``using``: a paused provider's jobs are handed
    back for PAUSE_RELEASE_SECONDS without a request, the other providers' go on."""
    with _books_lock:
        book = _books.get(using)
        if book is None:
            book = _books[using] = PauseBook(using, fixed=PAUSE_RELEASE_SECONDS)
            book.on_pause.append(for_endpoint(using).rebuild_for)
        return book


def _cancelled(using: str, messages: list[queue.Message], exc: BaseException) -> dict[int, str]:
    """A statement timeout cancelled the batch: its jobs go back unspent, and it is counted."""
    error = (
        f"Postgres cancelled a statement of the endpoint's batch ({str(exc).strip()}). Raise "
        "AUTOEMBED['STATEMENT_TIMEOUT'] (seconds; None keeps the database's guard rail), or "
        "post fewer rows (PUSH_ROWS_PER_POST). The jobs went back to the queue unspent."
    )
    incidents.report(using, IncidentKind.STATEMENT_TIMEOUT, "endpoint", error)
    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            queue.release_untouched(cursor, messages)
    except DatabaseError:  # they show again once their visibility timeout is over
        pass
    return {m.msg_id: error for m in messages}


def forget_pauses() -> None:
    """Forget this process's pauses (tests: each starts with every provider working)."""
    with _books_lock:
        _books.clear()


def _process(
    using: str, jobs: list[dict[str, Any]], deadline: float
) -> tuple[dict[int, str], list[ProcessingPaused]]:
    """Embed the rows ``jobs`` name on one database: the failed jobs' errors by jobId, and
    the pauses of the providers that refused their configuration or were unavailable.

    A posted job acknowledges only the rows it names in its own message: a
    message's other rows go back to the queue, and a job naming rows its
    message does not hold fails without touching that message.
    """
    with connections[using].cursor() as cursor:
        stored = queue.lookup(cursor, [j["jobId"] for j in jobs])
    errors: dict[int, str] = {}
    posted: dict[int, list[Any]] = {}
    messages: list[queue.Message] = []
    for job in jobs:
        job_id = job["jobId"]
        as_posted = queue.Message(job_id, 1, job)  # a validated job reads as its message would
        ids, target = as_posted.row_ids, as_posted.target
        assert target is not None
        message = stored.get(job_id)
        # Already done elsewhere, or never queued: embed what was posted, as the guide does.
        if message is None:
            message = queue.Message.new(target, ids, msg_id=job_id, read_ct=1)
        elif message.target != target or not all(message.names(i) for i in ids):
            errors[job_id] = (
                f"jobId {job_id} is a queue message for other rows; nothing was done with it"
            )
            continue
        posted[job_id] = ids
        messages.append(message)
    if not messages:
        return errors, []
    # A bulk import reaches the push path too: defer the index for it as a worker would.
    labels = {
        c.label
        for m in messages
        if m.target and (c := registry.match(m.target.table, m.target.function, m.target.column))
    }
    indexing = for_endpoint(using)
    indexing.tick(labels)
    try:
        with db.timeouts_for_batch(connections[using]):
            result = Processor(using=using, pauses=_pauses(using)).process(
                messages, deadline=deadline, rows_for=lambda m: posted[m.msg_id]
            )
    except (OperationalError, psycopg.OperationalError) as exc:
        if not db.cancelled(exc):
            raise
        return _cancelled(using, messages, exc), []
    indexing.heard(result.answered)
    indexing.finish()  # this batch may have drained a deferred index's backlog
    for msg_id, row_id, error in result.failed:
        if msg_id in posted and any(str(row_id) == str(i) for i in posted[msg_id]):
            errors.setdefault(msg_id, f"id {row_id}: {error}")
    return errors, list(result.pauses.values())
