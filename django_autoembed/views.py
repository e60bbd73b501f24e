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

from . import changes, db, incidents, queue, settings
from .declarations import registry
from .exceptions import ProcessingPaused
from .hnsw.deferral import for_endpoint
from .incidents import IncidentKind
from .pauses import PauseBook
from .pipeline import Processor, run_batch

logger = logging.getLogger(__name__)

# Seconds the jobs of a paused batch stay hidden, so pg_cron's next ticks do not re-post them at
# once.
PAUSE_RELEASE_SECONDS = 30


def _error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for key, value in headers.items():
        response[key.replace("_", "-")] = value
    return response


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
        jobs = queue.parse_posted(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"invalid jobs: {exc}")
    except RecursionError:
        return _error(400, "invalid jobs: the JSON is nested too deeply")

    deadline = time.monotonic() + float(settings.current().endpoint_time_budget)
    errors: dict[int, str] = {}  # jobId -> why the job failed
    paused: list[ProcessingPaused] = []
    for using, mine in _by_database(jobs).items():
        changes.tick(using, nudge=True)  # a model change under way: its jobs, its cutover
        refused, pauses = _process(using, mine, deadline)
        errors.update(refused)
        paused += pauses

    completed = [job.body for job in jobs if job.job_id not in errors]
    failed = [{**job.body, "error": errors[job.job_id]} for job in jobs if job.job_id in errors]
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


def _by_database(jobs: list[queue.PostedJob]) -> dict[str, list[queue.PostedJob]]:
    """Jobs by the database their table is written to (the router's db_for_write of the model)."""
    out: dict[str, list[queue.PostedJob]] = {}
    for job in jobs:
        target = job.target
        config = registry.match(target.table, target.function, target.column)
        if config is None:  # a model change's shadow, before this process has read the change
            config = next((c for c in registry.declared() if c.table == target.table), None)
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
    using: str, jobs: list[queue.PostedJob], deadline: float
) -> tuple[dict[int, str], list[ProcessingPaused]]:
    """Embed the rows ``jobs`` name on one database: the failed jobs' errors by jobId, and
    the pauses of the providers that refused their configuration or were unavailable."""
    errors, messages, posted = _match_posted(using, jobs)
    if not messages:
        return errors, []
    indexing = for_endpoint(using)
    processor = Processor(using=using, pauses=_pauses(using))
    try:
        with db.timeouts_for_batch(connections[using]):
            # A bulk import reaches the push path too: the index is deferred for it as a
            # worker would.
            result = run_batch(
                processor,
                indexing,
                messages,
                deadline=deadline,
                rows_for=lambda m: posted[m.msg_id],
            )
    except (OperationalError, psycopg.OperationalError) as exc:
        if not db.cancelled(exc):
            raise
        return _cancelled(using, messages, exc), []
    assert result is not None  # nothing is diverted to the Batch API here
    indexing.finish()  # this batch may have drained a deferred index's backlog
    for msg_id, row_id, error in result.failed:
        if msg_id in posted and any(str(row_id) == str(i) for i in posted[msg_id]):
            errors.setdefault(msg_id, f"id {row_id}: {error}")
    return errors, list(result.pauses.values())


def _match_posted(
    using: str, jobs: list[queue.PostedJob]
) -> tuple[dict[int, str], list[queue.Message], dict[int, list[Any]]]:
    """The queue's messages the jobs came from (or, already done elsewhere or never queued,
    the job as posted, as the guide embeds it), the rows each job names, and the jobs that
    name rows their message does not hold (they fail without touching that message).

    A posted job acknowledges only the rows it names in its own message: a message's other
    rows go back to the queue.
    """
    with connections[using].cursor() as cursor:
        stored = queue.lookup(cursor, [job.job_id for job in jobs])
    errors: dict[int, str] = {}
    posted: dict[int, list[Any]] = {}
    messages: list[queue.Message] = []
    for job in jobs:
        ids, target = job.row_ids, job.target
        message = stored.get(job.job_id)
        if message is None:
            message = queue.Message.new(target, ids, msg_id=job.job_id, read_ct=1)
        elif message.target != target or not all(message.names(i) for i in ids):
            errors[job.job_id] = (
                f"jobId {job.job_id} is a queue message for other rows; nothing was done with it"
            )
            continue
        posted[job.job_id] = ids
        messages.append(message)
    return errors, messages, posted
