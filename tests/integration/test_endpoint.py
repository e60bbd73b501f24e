"""The push endpoint over real HTTP: every refusal, and the guide's answer shape."""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
from django.db import connection

from django_autoembed.hnsw.deferral import wait_for_endpoint_builds
from tests.helpers import assert_fake_vector, purge_queue, queue_messages
from tests.testapp.models import Document

TOKEN = "test-token"


@pytest.fixture
def post(live_server):
    url = live_server.url + "/autoembed/embed/"

    def send(body, *, token=TOKEN, content_type="application/json", method="POST", raw=None):
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=content if method != "GET" else None, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())

    yield send
    # A POST that drained a deferred index's backlog left its build running in the server.
    assert wait_for_endpoint_builds(timeout=120)


@dataclass
class Response:
    status_code: int
    headers: object
    content: bytes

    def json(self):
        return json.loads(self.content)


def body(*jobs: dict) -> bytes:
    """A request body of jobs with a made-up target."""
    target = {"schema": "s", "table": "t", "contentFunction": "f", "embeddingColumn": "c"}
    return json.dumps([{**job, **target} for job in jobs]).encode()


def read_jobs():
    """Jobs as autoembed.process_embeddings would post them: one row each, with jobId."""
    with connection.cursor() as cursor:
        cursor.execute(
            "select pgmq.send_batch('embedding_jobs', array(select (message - 'ids') || "
            "jsonb_build_object('id', i) "
            "from pgmq.q_embedding_jobs, jsonb_array_elements(message -> 'ids') i order by "
            "msg_id)) "
            "where exists (select 1 from pgmq.q_embedding_jobs where message ? 'ids')"
        )
        cursor.execute("delete from pgmq.q_embedding_jobs where message ? 'ids'")
        cursor.execute("select msg_id, message from pgmq.read('embedding_jobs', 30, 5000)")
        rows = cursor.fetchall()
    return [{**(json.loads(m) if isinstance(m, str) else m), "jobId": msg_id} for msg_id, m in rows]


def test_jobs_are_embedded_and_answered_in_the_guides_shape(post, api):
    docs = [Document.objects.create(title=f"e{i}") for i in range(3)]
    jobs = read_jobs()
    response = post(jobs)
    assert response.status_code == 200
    body = response.json()
    assert body == {"completedJobs": jobs, "failedJobs": []}
    assert response.headers["X-Completed-Jobs"] == "3" and response.headers["X-Failed-Jobs"] == "0"
    assert queue_messages() == []
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


def test_provider_failure_reports_failed_jobs_and_keeps_messages(post, api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_SIZE": 1}  # one request per row
    docs = Document.objects.bulk_create([Document(title=f"some fail {i}") for i in range(4)])
    jobs = read_jobs()
    api.fail_next(1, status=500)  # one of the requests; the others get through
    response = post(jobs)
    assert response.status_code == 200
    assert response.headers["X-Failed-Jobs"] == "1"
    (failed,) = response.json()["failedJobs"]
    assert "500" in failed["error"]
    assert len(queue_messages()) == 1  # visible again after the backoff
    assert Document.objects.filter(embedding__isnull=False).count() == 3 and len(docs) == 4


def test_a_provider_that_is_down_answers_503_and_spends_no_attempt(post, api):
    Document.objects.create(title="outage")
    jobs = read_jobs()
    api.fail_next(5, status=500)
    response = post(jobs)
    assert response.status_code == 503 and response.headers["Retry-After"]
    (failed,) = response.json()["failedJobs"]
    assert failed["jobId"] == jobs[0]["jobId"] and "500" in failed["error"]
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs")
        assert cursor.fetchone()[0] == 0  # read once (by read_jobs), handed back uncounted


def test_unknown_target_is_a_failed_job_and_nothing_runs(post, api):
    doc = Document.objects.create(title="x")
    job = {
        "jobId": 1,
        "id": doc.pk,
        "schema": "public",
        "table": "testapp_document",
        "contentFunction": "pg_sleep",
        "embeddingColumn": "embedding",
    }
    evil = {**job, "jobId": 2, "table": 'testapp_document"; drop table testapp_document; --'}
    response = post([job, evil])
    assert response.status_code == 200
    errors = [f["error"] for f in response.json()["failedJobs"]]
    assert len(errors) == 2 and all("no declared embedding matches" in e for e in errors)
    assert Document.objects.filter(pk=doc.pk).exists() and api.requests == 0


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("wrong", 401), (TOKEN + "x", 401), (TOKEN[:-1], 401), ("", 401)],
)
def test_refuses_missing_and_wrong_tokens(post, token, status):
    assert post([], token=token).status_code == status


def test_refuses_other_methods_and_content_types(post):
    assert post(None, method="GET").status_code == 405
    assert post(None, method="PUT").status_code == 405
    assert post([], content_type="text/plain").status_code == 400


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "invalid jobs"),
        (b'{"a": 1}', "JSON list"),
        (b"[1]", "not an object"),
        (b'[{"jobId": 1}]', "lacks"),
        (body({"jobId": "1", "id": 1}), "jobId must be"),
        (body({"jobId": 1, "id": 99999999999999999999999}), "out of range"),
        (body({"jobId": 1, "id": 1}, {"jobId": 1, "id": 2}), "appears twice"),
        (body({"jobId": 1, "id": [1]}), "integer or a string"),
    ],
)
def test_malformed_bodies_get_400_saying_what_is_wrong(post, raw, fragment):
    response = post(None, raw=raw)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_body_over_the_limit_is_refused(post, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "ENDPOINT_MAX_BODY": 1000}
    response = post(None, raw=b"[" + b" " * 2000 + b"]")
    assert response.status_code == 413


def test_no_token_configured_means_no_endpoint(post, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "ENDPOINT_TOKEN": None}
    assert post([]).status_code == 404
    assert post([], token=None).status_code == 404


def test_a_thousand_jobs_in_one_request(post, api):
    Document.objects.bulk_create([Document(title=f"k{i}") for i in range(1000)])
    jobs = read_jobs()
    assert len(jobs) == 1000
    response = post(jobs)
    assert response.status_code == 200
    assert response.headers["X-Completed-Jobs"] == "1000"
    assert Document.objects.filter(embedding__isnull=True).count() == 0
    assert post([]).status_code == 200  # still serving


def test_a_backlog_posted_in_parts_is_embedded_without_the_index_then_built(post, api, settings):
    from django_autoembed.declarations import registry
    from django_autoembed.hnsw.deferral import IndexState
    from django_autoembed.hnsw.indexes import managed_index

    settings.AUTOEMBED = {**settings.AUTOEMBED, "INDEX_DEFER_ROWS": 200}
    index = managed_index(registry.get("testapp.Document.embedding"))
    assert index is not None
    Document.objects.bulk_create([Document(title=f"b{i}") for i in range(600)])
    jobs = read_jobs()

    def index_valid():
        with connection.cursor() as cursor:
            cursor.execute(
                "select indisvalid from pg_index where indexrelid = to_regclass(%s)", [index.name]
            )
            row = cursor.fetchone()
        return row[0] if row else None

    assert post(jobs[:300]).status_code == 200
    assert index_valid() is None and IndexState.objects.filter(index=index.name).exists()
    assert post(jobs[300:]).status_code == 200  # the last part drains the backlog: no later POST
    assert wait_for_endpoint_builds(timeout=120)
    assert index_valid() is True and not IndexState.objects.exists()
    assert Document.objects.filter(embedding__isnull=True).count() == 0


@pytest.fixture
def tripwires():
    """Objects that log any use: a job naming them must never reach SQL."""
    with connection.cursor() as cursor:
        cursor.execute("""
            create table hostile_log (what text);
            create table hostile_docs (id bigint primary key, title text, embedding halfvec(1536));
            insert into hostile_docs values (1, 'bait', null);
            create function hostile_touch(what text) returns boolean language plpgsql volatile as
              $$ begin insert into hostile_log values (what); return true; end $$;
            create function hostile_fn(r hostile_docs) returns text language plpgsql volatile as
              $$ begin perform hostile_touch('fn on hostile_docs'); return 'x'; end $$;
            create function hostile_fn2(r testapp_document) returns text language plpgsql
              volatile as
              $$ begin perform hostile_touch('fn on testapp_document'); return 'x'; end $$;
            create function hostile_trigger() returns trigger language plpgsql as
              $$ begin perform hostile_touch('update hostile_docs'); return new; end $$;
            create trigger hostile_upd before update on hostile_docs
              for each row execute function hostile_trigger();
            create view hostile_view as
              select * from testapp_document where hostile_touch('view read');
        """)
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "drop view hostile_view; drop table hostile_docs cascade; drop table hostile_log; "
            "drop function hostile_fn2(testapp_document); drop function hostile_touch(text); "
            "drop function hostile_trigger()"
        )


def test_hostile_targets_never_reach_sql_and_the_server_keeps_serving(post, api, tripwires):
    doc = Document.objects.create(title="real row")
    purge_queue()
    base = {
        "id": doc.pk,
        "schema": "public",
        "table": "testapp_document",
        "contentFunction": "testapp_document_embedding_input",
        "embeddingColumn": "embedding",
    }
    hostile = [
        {"table": "hostile_docs", "contentFunction": "hostile_fn", "id": 1},
        {"contentFunction": "hostile_fn2"},
        {"table": "hostile_view"},
        {"embeddingColumn": "title"},
        {"schema": "pg_catalog"},
        {"table": "testapp_document; select hostile_touch('injected'); --"},
        {"contentFunction": "testapp_document_embedding_input\"(t); select hostile_touch('q'); --"},
        {"embeddingColumn": "embedding = null, title"},
        {"schema": "public\x00"},
        {"table": "ｔｅｓｔａｐｐ_document"},
    ]
    jobs = [{**base, **h, "jobId": 100 + i} for i, h in enumerate(hostile)]
    response = post(jobs)
    assert response.status_code == 200, response.content
    failed = response.json()["failedJobs"]
    assert len(failed) == len(hostile) and not response.json()["completedJobs"]
    assert all("no declared embedding matches" in f["error"] for f in failed)
    # wrong types in the names are refused as a malformed body
    assert post([{**base, "schema": 1, "jobId": 1}]).status_code == 400
    assert post([{**base, "table": {"$ne": 1}, "jobId": 1}]).status_code == 400
    too_long = post([{**base, "table": "x" * 10_000, "jobId": 1}])
    assert too_long.status_code == 400 and "at most 255 characters" in too_long.json()["error"]
    with connection.cursor() as cursor:
        cursor.execute("select count(*) from hostile_log")
        assert cursor.fetchone()[0] == 0
        cursor.execute("select embedding is null from hostile_docs")
        assert cursor.fetchone()[0]
    assert api.requests == 0
    ok = post([{**base, "jobId": 1}])
    assert ok.status_code == 200 and ok.headers["X-Completed-Jobs"] == "1"
    assert_fake_vector(Document, doc.pk, "real row")


def packed_message():
    """The one queue message a multi-row insert sends: (msg_id, body naming several rows)."""
    with connection.cursor() as cursor:
        cursor.execute("select msg_id, message from pgmq.q_embedding_jobs")
        [(msg_id, body)] = cursor.fetchall()
    return msg_id, json.loads(body) if isinstance(body, str) else body


def test_a_job_naming_rows_its_message_does_not_hold_touches_nothing(post, api):
    docs = Document.objects.bulk_create([Document(title=f"packed {i}") for i in range(5)])
    stranger = Document.objects.create(title="not in that message")
    purge_queue()
    Document.objects.bulk_create(
        [Document(title=f"again {i}") for i in range(3)]
    )  # a fresh packed message
    msg_id, body = packed_message()
    job = {k: v for k, v in body.items() if k != "ids"} | {"id": stranger.pk, "jobId": msg_id}
    response = post([job])
    assert response.status_code == 200
    [failed] = response.json()["failedJobs"]
    assert "other rows" in failed["error"]
    assert queue_messages() == [body]  # the packed message is still there, its rows unembedded
    assert api.requests == 0 and not Document.objects.filter(embedding__isnull=False).exists()
    assert len(docs) == 5


def test_a_job_for_one_row_of_a_packed_message_acknowledges_only_that_row(post, api):
    docs = Document.objects.bulk_create([Document(title=f"part {i}") for i in range(4)])
    msg_id, body = packed_message()
    job = {k: v for k, v in body.items() if k != "ids"} | {"id": docs[1].pk, "jobId": msg_id}
    response = post([job])
    assert response.status_code == 200 and response.json()["completedJobs"] == [job]
    assert_fake_vector(Document, docs[1].pk, "part 1")
    left = queue_messages()
    assert sorted(left[0]["ids"]) == sorted(d.pk for i, d in enumerate(docs) if i != 1)
    assert "attempts" not in left[0]  # the rows not posted spent no attempt


def test_a_packed_message_posted_whole_is_embedded_whole(post, api):
    docs = Document.objects.bulk_create([Document(title=f"whole {i}") for i in range(6)])
    msg_id, body = packed_message()
    response = post([{**body, "jobId": msg_id}])
    assert response.status_code == 200 and response.headers["X-Completed-Jobs"] == "1"
    assert queue_messages() == []
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


def test_deeply_nested_json_is_a_400_not_a_500(post):
    response = post(None, raw=b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]
    assert post([]).status_code == 200  # still serving


def test_a_misconfigured_provider_answers_503_and_spends_nothing(post, api, settings):
    from django_autoembed.failures import EmbeddingFailure

    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.valid_keys = {"another-key"}
    Document.objects.bulk_create([Document(title=f"no key {i}") for i in range(3)])
    msg_id, body = packed_message()
    with connection.cursor() as cursor:  # as pg_cron's tick does before it posts
        cursor.execute("select count(*) from pgmq.read('embedding_jobs', 300, 10)")
    response = post([{**body, "jobId": msg_id}])
    assert response.status_code == 503 and response.headers["Retry-After"]
    [failed] = response.json()["failedJobs"]
    assert "401" in failed["error"] and "API_KEY" in failed["error"]
    assert not EmbeddingFailure.objects.exists()
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs where msg_id = %s", [msg_id])
        assert cursor.fetchone()[0] == 0  # the read pg_cron made is not counted


def test_rows_the_time_budget_left_unsent_go_back_unspent(post, api, settings):
    from django_autoembed.failures import EmbeddingFailure

    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "MAX_ATTEMPTS": 1,
        "BATCH_SIZE": 1,
        "MAX_REQUESTS": 1,
        "ENDPOINT_TIME_BUDGET": 0.5,
    }
    api.latency = 0.4
    docs = Document.objects.bulk_create([Document(title=f"slow {i}") for i in range(6)])
    msg_id, body = packed_message()
    response = post([{**body, "jobId": msg_id}])
    assert response.status_code == 200
    [failed] = response.json()["failedJobs"]
    assert "time budget" in failed["error"]
    assert not EmbeddingFailure.objects.exists()  # never sent: nothing spent, nothing given up
    [left] = queue_messages()
    assert 0 < len(left["ids"]) < 6 and "attempts" not in left
    done = Document.objects.filter(embedding__isnull=False).count()
    assert done + len(left["ids"]) == len(docs)


def test_a_pause_midway_reports_what_was_done_and_hands_back_the_rest(post, api):
    from tests.testapp.models import Article

    doc = Document.objects.create(title="done before the pause")
    purge_queue()
    Document.objects.filter(pk=doc.pk).update(title="done first")
    article = Article.objects.create(title="after the pause", body="b")
    jobs = read_jobs()
    document_jobs = [j for j in jobs if j["table"] == "testapp_document"]
    api.fail_next(1, status=200)  # the first request gets through
    api.fail_next(10, status=401)  # then the key is refused
    response = post(document_jobs + [j for j in jobs if j["table"] == "testapp_article"])
    assert response.status_code == 503
    body = response.json()
    assert body["completedJobs"] == document_jobs
    assert body["failedJobs"] and all("paused" in f["error"] for f in body["failedJobs"])
    assert_fake_vector(Document, doc.pk, "done first")
    left = {m["table"] for m in queue_messages()}
    assert left == {"testapp_article"} and article.pk
