"""A database guard rail (statement_timeout for the application's role or database) must not
cancel the worker's work for good, and a run that cannot work says so in its exit code."""

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from django_autoembed.declarations import registry
from django_autoembed.hnsw.deferral import IndexState
from django_autoembed.hnsw.indexes import managed_index
from django_autoembed.incidents import Incident
from django_autoembed.status import collect
from django_autoembed.worker import Worker, default_options
from tests.helpers import ROOT, queued_ids
from tests.testapp.models import Document


@pytest.fixture
def guard_rail():
    """Set statement_timeout on the test database, as a DBA would for the app; undone after.
    New sessions get it (this test's own connection is older and keeps no limit)."""
    name = connection.settings_dict["NAME"]

    def set_to(value: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f'alter database "{name}" set statement_timeout = %s', [value])

    yield set_to
    with connection.cursor() as cursor:
        cursor.execute(f'alter database "{name}" reset statement_timeout')


@pytest.fixture
def slow_writes():
    """Every UPDATE of a document costs 10 ms (a heavy trigger, as an application may have):
    a batch's write of 200 rows takes ~2 s."""
    with connection.cursor() as cursor:
        cursor.execute(
            "create or replace function slow_write() returns trigger language plpgsql as "
            "$$ begin perform pg_sleep(0.01); return new; end $$"
        )
        cursor.execute(
            "create trigger slow_write before update on testapp_document "
            "for each row execute function slow_write()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("drop trigger slow_write on testapp_document")
        cursor.execute("drop function slow_write()")


def run_once(**overrides) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "AUTOEMBED_TEST_DB": connection.settings_dict["NAME"],
        "AUTOEMBED_TEST_OVERRIDES": json.dumps(overrides),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    env.pop("AUTOEMBED_PUSH_TIER", None)
    return subprocess.run(
        [sys.executable, "-m", "django", "process_embeddings", "--once", "--concurrency=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_counts() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs")
        return {r[0] for r in cursor.fetchall()}


def test_the_worker_sets_its_own_timeout_under_the_guard_rail(api, guard_rail, slow_writes):
    docs = Document.objects.bulk_create([Document(title=f"guarded {i}") for i in range(200)])
    guard_rail("500ms")
    run = run_once(INDEX_DEFER_ROWS=None)
    assert run.returncode == 0, run.stderr
    assert Document.objects.filter(pk__in=[d.pk for d in docs], embedding__isnull=True).count() == 0
    assert not Incident.objects.exists()


def test_a_run_whose_batches_are_all_cancelled_exits_1_and_says_which_setting(
    api, guard_rail, slow_writes
):
    Document.objects.bulk_create([Document(title=f"cancelled {i}") for i in range(200)])
    guard_rail("500ms")
    run = run_once(INDEX_DEFER_ROWS=None, STATEMENT_TIMEOUT=None)  # the database's guard rail
    assert run.returncode == 1, run.stderr
    assert "statement_timeout is 500ms" in run.stderr
    assert "AUTOEMBED['STATEMENT_TIMEOUT']" in run.stderr
    assert "connection lost" not in run.stderr  # a cancelled statement is no lost connection
    assert len(queued_ids()) == 200 and read_counts() == {0}  # nothing spent
    [incident] = Incident.objects.all()
    assert incident.kind == "statement_timeout" and incident.count >= 3
    assert [i["count"] for i in collect().incidents] == [incident.count]


def test_an_index_build_completes_under_a_guard_rail_that_cancels_anything_longer(
    api, guard_rail, settings
):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "INDEX_DEFER_ROWS": 200}
    Document.objects.bulk_create([Document(title=f"built {i}") for i in range(3000)])
    guard_rail("100ms")  # a bulk build of 3,000 x 1,536 dims takes seconds
    worker = Worker(default_options(once=True, concurrency=2))  # lanes on new sessions
    assert worker.run() == 0, worker.exit_reason
    with connection.cursor() as cursor:
        cursor.execute(
            "select indisvalid from pg_index where indexrelid = to_regclass(%s)",
            [managed_index(registry.get("testapp.Document.embedding")).name],
        )
        assert cursor.fetchall() == [(True,)]
    assert not IndexState.objects.exists() and not Incident.objects.exists()
    assert Document.objects.filter(embedding__isnull=True).count() == 0
