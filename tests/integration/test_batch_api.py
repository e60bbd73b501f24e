"""The Batch API: backfills at half the price, with the same stale protection as any write."""

import signal

import pytest
from django.db import connection

from django_autoembed.batchapi import Batches, ProviderBatch
from django_autoembed.failures import EmbeddingFailure
from django_autoembed.pipeline import Processor
from django_autoembed.queue import read
from django_autoembed.status import collect
from django_autoembed.usage import EmbeddingUsage
from tests.helpers import (
    assert_fake_vector,
    drain,
    embedded_pks,
    hidden_messages,
    queue_messages,
    start_worker,
    wait_for,
)
from tests.testapp.models import Document, Manual, ManualChunk


def text_of(doc: Document) -> str:
    return f"{doc.title}\n\n{doc.content}" if doc.content else doc.title


def submit_all() -> Batches:
    """What a --batch-api worker does with the queue before the batch is over."""
    batches = Batches("default", poll_every=0)
    with connection.cursor() as cursor:
        messages = read(cursor, 1000, 30)
    assert batches.divert(Processor(), messages) == []  # every job waits for its batch
    return batches


def test_a_backfill_goes_through_the_batch_api_and_costs_no_embeddings_request(api):
    api.batch_delay = 0.5
    docs = [Document.objects.create(title=f"batched {n}", content="some text") for n in range(30)]
    drain(batch_api=True)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, text_of(doc))
    assert api.inputs == 0 and sorted(api.batch_texts) == sorted(map(text_of, docs))
    batches = list(ProviderBatch.objects.all())  # one per lane that read jobs
    assert {b.state for b in batches} == {"done"} and sum(b.vectors for b in batches) == 30
    assert sum(b.failed for b in batches) == 0
    [used] = EmbeddingUsage.objects.all()
    assert used.mode == "batch" and used.inputs == 30 and used.tokens > 0
    assert used.cost == pytest.approx(used.tokens * 0.02 / 1e6 * 0.5)
    assert queue_messages() == [] and not EmbeddingFailure.objects.exists()


def test_jobs_wait_hidden_and_unspent_while_their_batch_runs_and_status_shows_it(api):
    api.batch_delay = 60
    Document.objects.bulk_create([Document(title=f"waiting {n}") for n in range(5)])
    batches = submit_all()
    assert hidden_messages() == len(queue_messages()) == 1
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs")
        assert cursor.fetchone()[0] == 0  # waiting for a batch is not an attempt
    [shown] = collect().batches
    assert shown["inputs"] == 5 and shown["jobs"] == 1 and shown["status"] == "validating"
    assert batches.poll() == 1 and embedded_pks(Document) == set()


def test_a_row_edited_after_submission_gets_its_new_texts_vector(api):
    api.batch_delay = 0.3
    kept = Document.objects.create(title="stays the same")
    edited = Document.objects.create(title="before the edit")
    batches = submit_all()
    Document.objects.filter(pk=edited.pk).update(title="after the edit")
    wait_for(lambda: batches.poll(force=True) == 0, message="the batch to end")
    drain(batch_api=True, concurrency=1)  # one lane: two could each take one of its jobs
    assert_fake_vector(Document, kept.pk, "stays the same")
    assert_fake_vector(Document, edited.pk, "after the edit")  # never the old text's vector
    assert api.texts == ["after the edit"]  # through the embeddings API, once
    assert sorted(api.batch_texts) == ["before the edit", "stays the same"]


@pytest.mark.parametrize("outcome", ["expired", "failed", "cancelled"])
def test_what_an_expired_or_failed_batch_did_not_embed_goes_through_the_api(api, outcome):
    api.batch_delay, api.batch_outcome = 0.2, outcome
    docs = [Document.objects.create(title=f"{outcome} {n}") for n in range(20)]
    # One lane, so one batch: two lanes can each read some of the jobs (it happened in CI).
    drain(batch_api=True, batch_size=5, concurrency=1)  # four request lines; expired ran two
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    [batch] = ProviderBatch.objects.all()
    done_in_batch = 10 if outcome == "expired" else 0
    assert batch.status == outcome and batch.vectors == done_in_batch
    assert len(api.batch_texts) == done_in_batch and api.inputs == 20 - done_in_batch
    assert len(ProviderBatch.objects.all()) == 1  # no second batch round for the rest
    assert not EmbeddingFailure.objects.exists()


def test_a_request_the_batch_refused_fails_its_rows_alone(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 2}
    api.batch_delay = 0.2
    api.poison = {"POISON"}
    good = [Document.objects.create(title=f"good {n}") for n in range(8)]
    bad = Document.objects.create(title="POISON pill")
    drain(batch_api=True, batch_size=3, concurrency=1)  # one lane: one batch
    for doc in good:
        assert_fake_vector(Document, doc.pk, doc.title)
    [failure] = EmbeddingFailure.objects.all()
    assert failure.object_pk == str(bad.pk)
    [batch] = ProviderBatch.objects.all()
    assert batch.failed == 3 and "poison" in batch.error


def test_chunks_of_long_documents_go_through_the_batch_api_too(api):
    from tests.helpers import prose

    api.batch_delay = 0.2
    manual = Manual.objects.create(title="Manual", body=prose(20))
    drain(batch_api=True)
    chunks = list(ManualChunk.objects.filter(parent=manual))
    assert len(chunks) > 1 and api.inputs == 0
    assert sorted(api.batch_texts) == sorted(c.text for c in chunks)


def test_a_worker_restarted_mid_batch_picks_it_up_and_submits_nothing_twice(api):
    api.batch_delay = 4
    docs = [Document.objects.create(title=f"restart {n}") for n in range(10)]
    first = start_worker("--batch-api", "--concurrency", "1")  # one lane: one batch
    wait_for(
        lambda: ProviderBatch.objects.filter(state="submitted").exists(),
        message="the batch to be submitted",
    )
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert embedded_pks(Document) == set() and hidden_messages() == 10  # one per insert
    second = start_worker("--batch-api", "--once")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert len(api.batches) == 1 and api.inputs == 0
    assert queue_messages() == []


def test_a_refused_submission_is_embedded_at_once_and_no_other_worker_sees_its_jobs(api):
    api.files_status = 500
    docs = [Document.objects.create(title=f"refused {n}") for n in range(3)]
    with connection.cursor() as cursor:
        messages = read(cursor, 1000, 30)
    now = Batches("default", poll_every=0).divert(Processor(), messages)
    assert {m.msg_id for m in now} == {m.msg_id for m in messages}  # this lane embeds them
    with connection.cursor() as cursor:
        assert read(cursor, 1000, 30) == []  # still hidden: no second worker takes them
    assert not ProviderBatch.objects.exists()
    Processor().process(now)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


@pytest.mark.parametrize("gone", ["output file", "batch"])
def test_a_batch_or_output_the_provider_lost_gives_its_jobs_back(api, gone):
    api.batch_delay = 0.1
    docs = [Document.objects.create(title=f"lost {n}") for n in range(4)]
    batches = submit_all()
    [record] = ProviderBatch.objects.all()
    wait_for(lambda: api._batch(record.batch_id)["status"] == "completed", message="the batch")
    if gone == "batch":
        api.batches.clear()
    else:
        api.files.clear()
    assert batches.poll(force=True) == 0  # 404: over, not in flight for ever
    record.refresh_from_db()
    assert record.state == "done" and "404" in record.error and record.failed == 0
    drain(batch_api=True)  # through the embeddings API, with no second batch
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert ProviderBatch.objects.count() == 1 and api.inputs == 4


def test_a_batch_of_a_config_no_longer_declared_is_given_up_without_a_crash(api):
    Document.objects.create(title="orphaned")
    submit_all()
    ProviderBatch.objects.update(config="testapp.Gone.embedding")
    assert Batches("default", poll_every=0).poll() == 0
    [record] = ProviderBatch.objects.all()
    assert record.state == "done" and "no longer declared" in record.error
    assert hidden_messages() == 0  # its jobs are back, to fail as undeclared targets would


def test_no_transaction_is_open_while_the_batch_api_is_asked(api, monkeypatch):
    from django.db import connections

    from django_autoembed.providers.openai import OpenAIProvider

    api.batch_delay = 0.1
    Document.objects.create(title="looked at")
    batches = submit_all()
    seen = []
    real = OpenAIProvider.batch_status

    def status(self, batch_id):
        seen.append(connections["default"].in_atomic_block)
        return real(self, batch_id)

    monkeypatch.setattr(OpenAIProvider, "batch_status", status)
    wait_for(lambda: batches.poll(force=True) == 0, message="the batch to end")
    assert seen and not any(seen)
