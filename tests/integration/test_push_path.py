"""The guide's push path for real: pg_cron fires, pg_net POSTs to the live server, the view embeds.

Runs on Postgres 17 with pg_cron and pg_net (tests/pgcron); scripts/test.sh runs
it as its own pass with AUTOEMBED_PUSH_TIER=1.
"""

import io
import json
import time

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection

from django_autoembed import settings as autoembed_settings
from django_autoembed.failures import EmbeddingFailure
from django_autoembed.hnsw.deferral import wait_for_endpoint_builds
from django_autoembed.push import JOB_NAME
from django_autoembed.sync import sync
from tests.helpers import assert_fake_vector, purge_queue, queue_messages
from tests.testapp.models import Document

pytestmark = [
    pytest.mark.pgcron,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        bool(django_settings.PUSH_TIER_SKIP), reason=str(django_settings.PUSH_TIER_SKIP)
    ),
]


def fetch(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def wait_for(predicate, timeout=45.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def responses():
    """(status, X-Failed-Jobs) of every response pg_net recorded."""
    rows = fetch("select status_code, headers from net._http_response order by id")
    out = []
    for status, headers in rows:
        headers = (
            headers if isinstance(headers, dict) else __import__("json").loads(headers or "{}")
        )
        failed = next((v for k, v in headers.items() if k.lower() == "x-failed-jobs"), None)
        out.append((status, failed))
    return out


def settle() -> None:
    """Let the POSTs pg_net has sent come back and the index builds they started end.

    A test's flush (TRUNCATE) meeting the endpoint's CREATE INDEX CONCURRENTLY fails, and the
    next test would find this one's rows."""
    limit = time.monotonic() + float(autoembed_settings.current().push_timeout) + 10
    while time.monotonic() < limit:
        ((queued, sent, answered),) = fetch(
            "select (select count(*) from net.http_request_queue),"
            " (select case when is_called then last_value else 0 end"
            "  from net.http_request_queue_id_seq),"
            " (select coalesce(max(id), 0) from net._http_response)"
        )
        if queued == 0 and answered >= sent:
            break
        time.sleep(0.2)
    assert wait_for_endpoint_builds(timeout=120), "an index build the endpoint started hangs"


@pytest.fixture
def push(live_server, settings):
    purge_queue()
    fetch("delete from net._http_response")
    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "ENDPOINT_URL": live_server.url + "/autoembed/embed/",
        "SCHEDULE": "1 seconds",
    }
    said = sync()
    assert any(JOB_NAME in line for line in said), said
    yield
    settings.AUTOEMBED = {**settings.AUTOEMBED, "SCHEDULE": None}
    sync()
    settle()
    assert fetch("select count(*) from cron.job where jobname = %s", [JOB_NAME]) == [(0,)]
    purge_queue()


def test_cron_posts_through_pg_net_and_the_view_embeds(push, api):
    docs = [Document.objects.create(title=f"pushed {i}") for i in range(3)]
    Document.objects.bulk_create(
        [Document(title=f"bulk {i}") for i in range(30)]
    )  # a packed message
    wait_for(
        lambda: Document.objects.filter(embedding__isnull=True).count() == 0,
        what="cron to embed rows",
    )
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert (200, "0") in responses()
    wait_for(lambda: queue_messages() == [], what="the queue to empty")
    out = io.StringIO()
    call_command("autoembed_status", "--json", stdout=out)
    push_status = json.loads(out.getvalue())["push"]
    assert push_status["pg_cron"] and push_status["pg_net"] and push_status["job_active"]
    assert push_status["schedule"] == "1 seconds" and push_status["last_run_status"] == "succeeded"
    assert push_status["last_run_at"] is not None


def test_failing_provider_is_reported_and_retried_on_later_ticks(push, api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "RETRY_BACKOFF": 1}
    api.failure_rate = 1.0
    api.failure_statuses = (500,)
    doc = Document.objects.create(title="flaky")
    # every request fails: an outage, answered 503 with the failed jobs, no attempt spent
    wait_for(
        lambda: any(status == 503 and failed not in (None, "0") for status, failed in responses()),
        what="a response with failed jobs",
    )
    assert Document.objects.get(pk=doc.pk).embedding is None
    api.failure_rate = 0.0
    wait_for(
        lambda: Document.objects.get(pk=doc.pk).embedding is not None, what="the retry to embed"
    )
    assert_fake_vector(Document, doc.pk, "flaky")


def test_wrong_token_in_the_database_is_refused(push, api):
    fetch("update autoembed.settings set value = 'wrong' where key = 'endpoint_token'")
    doc = Document.objects.create(title="kept")
    wait_for(lambda: any(status == 401 for status, _ in responses()), what="a 401 response")
    assert Document.objects.get(pk=doc.pk).embedding is None
    assert len(queue_messages()) == 1
    assert api.requests == 0


def test_packed_messages_over_several_ticks_are_each_posted_once_and_embedded(push, api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PUSH_ROWS_PER_POST": 500, "PUSH_MAX_POSTS": 1}
    sync()  # the cron command now carries one 500-row POST a tick
    docs = []
    for s in range(4):
        docs += Document.objects.bulk_create(
            [Document(title=f"tick {s} row {i}") for i in range(500)]
        )
    wait_for(
        lambda: Document.objects.filter(embedding__isnull=True).count() == 0,
        timeout=60,
        what="four ticks to post the four packed messages",
    )
    # the view commits before it answers: pg_net records the last response a moment later
    wait_for(lambda: len(responses()) >= 4, what="pg_net to record the four responses")
    time.sleep(2.5)  # two more ticks: an empty queue posts nothing more
    answered = responses()
    assert len(answered) == 4 and {status for status, _ in answered} == {200}
    assert not EmbeddingFailure.objects.exists()
    for doc in docs[::100]:
        assert_fake_vector(Document, doc.pk, doc.title)


@pytest.mark.parametrize("fault", ["down", "500"])
def test_an_endpoint_that_is_down_or_broken_loses_nothing(push, api, settings, live_server, fault):
    broken_url = (
        "http://127.0.0.1:9/autoembed/embed/" if fault == "down" else live_server.url + "/broken/"
    )
    settings.AUTOEMBED = {**settings.AUTOEMBED, "ENDPOINT_URL": broken_url, "MAX_ATTEMPTS": 2}
    sync()
    docs = Document.objects.bulk_create([Document(title=f"{fault} {i}") for i in range(300)])
    wait_for(lambda: len(responses()) >= 4, what="a few failed POSTs")
    assert Document.objects.filter(embedding__isnull=False).count() == 0
    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "ENDPOINT_URL": live_server.url + "/autoembed/embed/",
    }
    sync()
    wait_for(lambda: Document.objects.filter(embedding__isnull=True).count() == 0, what="recovery")
    assert not EmbeddingFailure.objects.exists()
    for doc in docs[::50]:
        assert_fake_vector(Document, doc.pk, doc.title)


def test_pg_nets_answers_to_our_posts_are_kept_only_as_long_as_configured(push, api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PUSH_KEEP_RESPONSES": "2 seconds"}
    sync()
    Document.objects.create(title="answered, then forgotten")
    wait_for(lambda: responses(), what="pg_net to record the endpoint's answer")
    # Ticks go on every second; each deletes our answers older than two seconds.
    wait_for(lambda: not responses(), timeout=20, what="the old answers to be deleted")
    Document.objects.create(title="the next one")
    wait_for(lambda: responses(), what="the next answer")


def test_pg_crons_history_of_our_job_is_kept_only_as_long_as_configured(push, api, settings):
    """At a tick a second, cron.job_run_details grew by 86,400 rows a day, never purged."""
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PUSH_KEEP_RESPONSES": "3 seconds"}
    sync()
    ((jobid,),) = fetch("select jobid from cron.job where jobname = %s", [JOB_NAME])

    def runs() -> int:
        return fetch("select count(*) from cron.job_run_details where jobid = %s", [jobid])[0][0]

    wait_for(lambda: runs() >= 3, what="a few ticks")
    time.sleep(8)  # eight more ticks: each deletes our runs older than three seconds
    assert 0 < runs() <= 6
    assert fetch(
        "select count(*) from cron.job_run_details where jobid = %s "
        "and end_time < now() - interval '5 seconds'",
        [jobid],
    ) == [(0,)]


def changed_by_the_push_path(model: str, to: str, what: str) -> None:
    """Apply the change of ``model``'s config to model ``to`` and wait for the push path to
    fill ``what`` and cut over (the change is abandoned if it does not)."""
    from tests.helpers import change_in_place

    change_in_place("testapp", model, model=to)
    try:
        wait_for(
            lambda: (
                fetch("select cut_over is not null from django_autoembed_embeddingchange")
                == [(True,)]
            ),
            timeout=90,
            what=f"the push path to fill {what} and cut over",
        )
    finally:
        print(  # shown if it fails
            fetch("select queued, switched, cut_over from django_autoembed_embeddingchange"),
            queue_messages(),
            responses()[-5:],
            fetch("select error from django_autoembed_embeddingfailure"),
        )
        if fetch("select cut_over from django_autoembed_embeddingchange") == [(None,)]:
            change_in_place("testapp", model, model=to, backwards=True)


def test_a_model_change_is_filled_and_cut_over_by_the_push_path_alone(push, api, settings):
    """No worker: pg_cron posts the new column's backfill, the endpoint fills it, and the
    jobs it leaves due when only time is left move the change to its cutover."""
    from django_autoembed.testing import fake_vector

    api.model_vectors = True
    large = "text-embedding-3-large"
    docs = [Document.objects.create(title=f"change {i}") for i in range(20)]
    wait_for(
        lambda: Document.objects.filter(embedding__isnull=True).count() == 0,
        what="the rows embedded by the old model",
    )
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": large, "CHANGE_NOTICE": 1}
    try:
        changed_by_the_push_path("Document", large, "the new column")
    finally:
        fetch("alter table testapp_document drop column if exists embedding_previous")
    for doc in docs:
        stored = Document.objects.get(pk=doc.pk).embedding
        expected = fake_vector(doc.title, 1536, large)
        assert abs(float(np.dot(np.asarray(stored, dtype=np.float32), expected)) - 1) < 1e-2
    found = Document.objects.semantic_search("change 7", k=1)
    assert [d.title for d in found] == ["change 7"]
    assert (200, "0") in responses()


def test_a_chunked_model_change_is_filled_and_cut_over_by_the_push_path_alone(push, api, settings):
    """The same for a config stored in chunks: the new chunk table is filled by the endpoint
    and swapped in for the live one."""
    from django_autoembed import changes
    from django_autoembed.testing import fake_vector
    from tests.testapp.models import Manual

    api.model_vectors = True
    large = "text-embedding-3-large"
    manuals = [Manual.objects.create(title=f"manual {i}", body=f"body {i}") for i in range(12)]
    wait_for(
        lambda: (
            fetch("select count(distinct parent_id) from testapp_manual_embedding_chunks")
            == [(12,)]
        ),
        what="the chunks embedded by the old model",
    )
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": large, "CHANGE_NOTICE": 1}
    try:
        changed_by_the_push_path("Manual", large, "the new chunk table")
    finally:
        fetch("drop table if exists testapp_manual_embedding_chunks_previous")
        fetch("delete from django_autoembed_embeddingchange")
        changes.forget_all()
    rows = fetch(
        "select c.text, c.embedding::text from testapp_manual_embedding_chunks c "
        "where c.parent_id = any(%s)",
        [[m.pk for m in manuals]],
    )
    assert len(rows) == 12
    for text, vector in rows:
        stored = np.asarray(json.loads(vector), dtype=np.float32)
        assert abs(float(np.dot(stored, fake_vector(text, 1536, large))) - 1) < 1e-2, text
    [found] = Manual.objects.semantic_search("manual 7\n\nbody 7", k=1)
    assert found.title == "manual 7"
