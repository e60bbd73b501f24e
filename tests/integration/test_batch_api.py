"""The Batch API: backfills at half the price, within the account's enqueued-token limit,
collected by any worker, with the same stale protection as any write."""

import json
import signal
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_autoembed.backfill import backfill
from django_autoembed.batches import Batches, ProviderBatch, filling, submission
from django_autoembed.declarations import registry
from django_autoembed.failures import EmbeddingFailure
from django_autoembed.incidents import Incident
from django_autoembed.pipeline import Processor
from django_autoembed.queue import read
from django_autoembed.status import collect
from django_autoembed.usage import EmbeddingUsage
from tests.helpers import (
    assert_fake_vector,
    drain,
    embedded_pks,
    hidden_messages,
    purge_queue,
    queue_messages,
    run_command,
    start_worker,
    tokens,
    wait_for,
)
from tests.testapp.models import Document, Manual, ManualChunk

DOCS = "testapp.Document.embedding"


def text_of(doc: Document) -> str:
    return f"{doc.title}\n\n{doc.content}" if doc.content else doc.title


def as_backfill(*labels: str) -> int:
    """Forget what the triggers queued and queue the rows as ``--backfill`` does."""
    purge_queue()
    return sum(backfill(registry.get(label)) for label in labels or (DOCS,))


def documents(n: int, prefix: str = "doc", content: str = "") -> list[Document]:
    docs = Document.objects.bulk_create(
        [Document(title=f"{prefix} {i}", content=content) for i in range(n)]
    )
    as_backfill()
    return docs


def submit_all(batches: Batches | None = None) -> Batches:
    """What a --batch-api worker does with the queue before the batch is over."""
    batches = batches or Batches("default", divert=True, poll_every=0)
    with connection.cursor() as cursor:
        messages = read(cursor, 1000, 30)
    assert batches.divert(Processor(), messages) == []  # every job waits for its batch
    batches.submit_due(100, everything=True)
    return batches


def total_tokens(docs) -> int:
    return sum(tokens(text_of(d)) for d in docs)


def test_a_backfill_goes_through_the_batch_api_in_one_batch_across_reads_and_lanes(api):
    api.batch_delay = 0.5
    docs = documents(60, "batched", "some text")
    # 20 rows a read, three lanes: one batch all the same, filled across the reads.
    drain(batch_api=True, batch_size=5, max_requests=2, concurrency=3)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, text_of(doc))
    assert api.inputs == 0 and sorted(api.batch_texts) == sorted(map(text_of, docs))
    [batch] = ProviderBatch.objects.all()
    assert batch.state == "done" and batch.vectors == 60 and batch.failed == 0
    assert batch.enqueued == total_tokens(docs) and batch.tokens == batch.enqueued
    [used] = EmbeddingUsage.objects.all()
    assert used.mode == "batch" and used.inputs == 60 and used.tokens == batch.tokens
    assert used.cost == pytest.approx(used.tokens * 0.02 / 1e6 * 0.5)
    assert queue_messages() == [] and not EmbeddingFailure.objects.exists()


def test_jobs_wait_hidden_and_unspent_while_their_batch_runs_and_status_shows_it(api):
    api.batch_delay = 60
    documents(5, "waiting")
    batches = submit_all()
    [message] = queue_messages()
    assert hidden_messages() == 1 and message["origin"] == "backfill"
    assert isinstance(message["held_for"], int)
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs")
        assert cursor.fetchone()[0] == 0  # waiting for a batch is not an attempt
    [shown] = collect().batches
    assert shown["inputs"] == 5 and shown["jobs"] == 1 and shown["status"] == "validating"
    assert shown["tokens"] > 0
    assert batches.poll() == 1 and embedded_pks(Document) == set()


def test_lag_is_of_the_jobs_writes_queued_not_of_a_backfill_or_its_batch(api):
    """A monitoring probe's `--fail-on-lag`: a backfill's jobs waiting their turn, and those
    a batch holds for its window (up to a day), are no lag; a job a write queued is, once no
    worker takes it in time (before, a Batch API backfill failed the probe all day long)."""
    api.batch_delay = 60
    docs = documents(5, "held")
    submit_all()  # their batch holds them
    assert backfill(registry.get(DOCS)) == len(docs)  # and the backfill queued them again
    time.sleep(1.2)
    probe = run_command("autoembed_status", "--json", "--fail-on-lag", "1")
    assert probe.returncode == 0, probe.stderr
    status = json.loads(probe.stdout)
    assert status["queue_depth"] == 2 and status["batch_held_jobs"] == 1
    assert status["oldest_message_age_s"] > 1 and status["oldest_write_age_s"] is None
    assert status["lagging"] is False
    Document.objects.create(title="written while no worker runs")
    time.sleep(1.2)
    probe = run_command("autoembed_status", "--fail-on-lag", "1")
    assert probe.returncode == 3, probe.stderr
    assert "Lagging: the oldest job a write queued waited" in probe.stderr
    assert "3 messages" in probe.stdout and "1 held by Batch API batches" in probe.stdout


def test_a_rows_lag_counts_from_when_a_write_first_queued_it_across_retries(api, settings):
    """A row retried (a message sent on for it alone) waits since its write, not since the
    retry: before, each retry made the lag start again, and the probe never fired on a row
    that kept failing, or on rate limits that kept rows waiting."""
    settings.AUTOEMBED = {**settings.AUTOEMBED, "RETRY_BACKOFF": 60}
    Document.objects.bulk_create([Document(title="fine"), Document(title="POISON")])
    [message] = queue_messages()
    assert len(message["ids"]) == 2  # one message for both rows
    time.sleep(1.5)
    api.poison = {"POISON"}
    drain()
    [retry] = queue_messages()
    assert retry["id"] and retry["attempts"] == 1  # sent on for the failed row alone
    assert collect().oldest_write_age_s >= 1.5
    # Anything else a job's body says there (a job sent by other code) is ignored.
    from django_autoembed.queue import send_batch

    with connection.cursor() as cursor:
        for odd in ("yesterday", 1e300, -5, {"at": 1}):
            send_batch(cursor, [{**retry, "queued_at": odd}])
    assert 1.5 <= collect().oldest_write_age_s < 600


def test_rows_users_write_beside_a_batch_worker_are_embedded_at_once(api):
    """Only the backfill waits for a batch: a trigger's job goes through the embeddings API,
    and the batch's vector of the old text never lands on the edited row."""
    api.batch_delay = 3
    docs = documents(40, "old")
    batches = submit_all()  # the whole backfill is in a batch now
    edited = docs[:20]
    for doc in edited:
        Document.objects.filter(pk=doc.pk).update(title=f"edited {doc.pk}")
    new = Document.objects.create(title="written during the backfill")
    drain(batch_api=True)  # waits for the batch too
    assert sorted(api.texts) == sorted([f"edited {d.pk}" for d in edited] + [new.title])
    for doc in edited:
        assert_fake_vector(Document, doc.pk, f"edited {doc.pk}")
    for doc in docs[20:]:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert len(api.batch_texts) == 40 and batches.poll(force=True) == 0
    assert queue_messages() == []


def test_a_row_edited_after_submission_gets_its_new_texts_vector(api):
    api.batch_delay = 0.3
    kept, edited = documents(2, "before")
    batches = submit_all()
    Document.objects.filter(pk=edited.pk).update(title="after the edit")
    wait_for(lambda: batches.poll(force=True) == 0, message="the batch to end")
    drain(batch_api=True, concurrency=1)
    assert_fake_vector(Document, kept.pk, kept.title)
    assert_fake_vector(Document, edited.pk, "after the edit")  # never the old text's vector
    assert api.texts == ["after the edit"]  # through the embeddings API, once
    assert sorted(api.batch_texts) == sorted([kept.title, edited.title])


def test_the_enqueued_token_limit_is_learned_and_nothing_goes_at_full_price(api, settings):
    """The account's limit is lower than BATCH_QUEUE_TOKENS says: the first batch is refused
    for it, the budget drops to the limit the API stated, and the backfill flows through
    batches that fit; none of it goes to the embeddings API."""
    docs = documents(300, "limited", "a few words more to count")
    limit = total_tokens(docs) // 3
    api.batch_queue_limit, api.batch_delay = limit, 0.3
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": limit * 10}
    drain(batch_api=True, concurrency=2)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, text_of(doc))
    assert api.inputs == 0 and api.batch_limit_refusals >= 1
    records = list(ProviderBatch.objects.order_by("pk"))
    refused = [r for r in records if r.queue_limit is not None]
    assert refused and all(r.queue_limit == limit for r in refused)
    assert all(r.vectors == 0 for r in refused)
    ran = [r for r in records if r.queue_limit is None]
    assert sum(r.vectors for r in ran) == 300 and all(r.enqueued <= limit for r in ran)
    [incident] = Incident.objects.filter(kind="batch_limit")
    assert incident.count == len(refused) and "BATCH_QUEUE_TOKENS" in incident.error
    assert not EmbeddingFailure.objects.exists() and queue_messages() == []


def test_a_backfill_larger_than_the_budget_flows_through_it_within_the_limit(api, settings):
    """BATCH_QUEUE_TOKENS at the account's limit: batches take a share each, the next goes
    as one finishes, the API never refuses one, and nothing waits at full price."""
    docs = documents(400, "flowing", "text enough to weigh")
    limit = total_tokens(docs) // 5
    api.batch_queue_limit, api.batch_delay = limit, 0.4
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": limit}
    drain(batch_api=True)
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert api.inputs == 0 and api.batch_limit_refusals == 0
    records = list(ProviderBatch.objects.all())
    assert len(records) >= 8 and all(r.enqueued <= limit // 4 for r in records)
    assert sum(r.vectors for r in records) == 400


def test_with_batch_fallback_a_refused_batch_goes_to_the_embeddings_api(api, settings):
    docs = documents(30, "fallback")
    api.batch_queue_limit = 1  # nothing fits
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_FALLBACK": True}
    drain(batch_api=True, concurrency=1)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert api.inputs == 30 and api.batch_texts == []
    [record] = ProviderBatch.objects.all()
    assert record.queue_limit is not None and "token_limit_exceeded" in record.error


def test_a_batch_holds_at_most_the_apis_inputs(api, monkeypatch):
    monkeypatch.setattr(filling, "MAX_INPUTS", 25)
    api.batch_max_inputs, api.batch_delay = 25, 0.2
    docs = documents(110, "capped")
    drain(batch_api=True)
    assert embedded_pks(Document) == {d.pk for d in docs} and api.inputs == 0
    records = list(ProviderBatch.objects.all())
    assert len(records) == 5 and max(r.inputs for r in records) == 25
    assert all(b["status"] == "completed" for b in api.batches.values())


def test_a_message_too_large_for_one_batch_is_split_not_stuck(api, settings):
    docs = documents(50, "split")  # one message of 50 rows
    per_row = max(tokens(d.title) for d in docs)
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": per_row * 40}
    api.batch_delay = 0.2
    drain(batch_api=True, concurrency=1)
    assert embedded_pks(Document) == {d.pk for d in docs} and api.inputs == 0
    assert ProviderBatch.objects.count() >= 5  # a share is ten rows


def test_any_worker_collects_a_batch_a_stopped_batch_worker_left(api):
    api.batch_delay = 2
    docs = documents(10, "collected")
    first = start_worker("--batch-api", "--concurrency", "1")
    wait_for(
        lambda: ProviderBatch.objects.filter(state="submitted").exists(),
        message="the batch to be submitted",
    )
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    plain = start_worker()  # no --batch-api
    wait_for(lambda: len(embedded_pks(Document)) == 10, message="the rows to be embedded")
    plain.send_signal(signal.SIGTERM)
    plain.communicate(timeout=30)
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert api.inputs == 0 and len(api.batches) == 1


def test_jobs_held_by_a_batch_are_no_backlog_that_defers_the_index(api):
    from django_autoembed.hnsw.backlog import Backlog

    api.batch_delay = 60
    documents(50, "held")
    backlog = Backlog("default")
    assert backlog.rows(fresh=True) == {DOCS: 50}  # a worker without --batch-api embeds them
    backlog.skip_backfill = True
    assert backlog.rows(fresh=True) == {}  # a --batch-api worker sends them to batches
    submit_all()
    backlog.skip_backfill = False
    assert backlog.rows(fresh=True) == {}  # held by a batch: no worker's backlog
    edited = Document.objects.first()
    Document.objects.filter(pk=edited.pk).update(title="edited")
    assert backlog.rows(fresh=True) == {DOCS: 1}  # the edits are


def test_a_killed_upload_submits_nothing_twice(api):
    """The worker died after recording the batch, before the provider had it: its jobs stay
    held (no other worker takes them), and once its lease runs out a worker finds no such
    batch and gives them back for a new one."""
    api.batch_delay = 0.2
    docs = documents(8, "killed")
    batches = Batches("default", divert=True, poll_every=0)
    with connection.cursor() as cursor:
        messages = read(cursor, 1000, 30)
    batches.divert(Processor(), messages)
    [fill] = batches.filler.take_due(everything=True)
    lease = submission.PREPARING_TIMEOUT
    record = submission._reserve("default", fill, list(fill.inputs), [len(fill.inputs)], lease)
    assert record is not None and hidden_messages() == 1
    other = Batches("default", divert=True, poll_every=0)
    assert other.poll() == 1  # another worker: its lease is not over, nothing to look at
    with connection.cursor() as cursor:
        assert read(cursor, 1000, 30) == []  # and its jobs are held
    assert api.batches == {}
    ProviderBatch.objects.filter(pk=record.pk).update(
        leased_until=timezone.now() - timedelta(seconds=1)
    )
    drain(batch_api=True)
    assert embedded_pks(Document) == {d.pk for d in docs}
    record.refresh_from_db()
    assert record.state == "done" and "stopped while submitting" in record.error
    assert len(api.batches) == 1 and api.inputs == 0


def test_a_submission_that_ends_after_its_jobs_were_given_back_is_cancelled(api, monkeypatch):
    api.batch_delay = 30
    documents(3, "late")
    from django_autoembed.providers.openai import OpenAIProvider

    real = OpenAIProvider.submit_batch

    def slow(self, *args, **kwargs):
        ProviderBatch.objects.update(state="done", error="given up by another worker")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(OpenAIProvider, "submit_batch", slow)
    submit_all()
    [batch] = api.batches.values()
    assert batch["status"] == "cancelled"


def test_a_refused_submission_waits_unspent_and_is_counted(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_POLL_SECONDS": 30}
    api.files_status = 500
    documents(3, "refused")
    submit_all()
    assert api.inputs == 0 and hidden_messages() == 1
    [message] = queue_messages()
    assert "held_for" not in message and "from_batch" not in message
    [incident] = Incident.objects.filter(kind="batch_submit")
    assert "BATCH_FALLBACK" in incident.error
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs")
        assert cursor.fetchone()[0] == 0
    api.files_status = None
    with connection.cursor() as cursor:  # later...
        cursor.execute("update pgmq.q_embedding_jobs set vt = clock_timestamp()")
    drain(batch_api=True)  # tried again: through a batch
    assert len(embedded_pks(Document)) == 3 and api.inputs == 0


@pytest.mark.parametrize("outcome", ["expired", "failed", "cancelled"])
def test_what_an_expired_or_failed_batch_did_not_embed_goes_through_the_api(api, outcome):
    api.batch_delay, api.batch_outcome = 0.2, outcome
    docs = documents(20, outcome)
    drain(batch_api=True, batch_size=5)  # four request lines; expired ran two
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    [batch] = ProviderBatch.objects.all()
    done_in_batch = 10 if outcome == "expired" else 0
    assert batch.status == outcome and batch.vectors == done_in_batch
    assert len(api.batch_texts) == done_in_batch and api.inputs == 20 - done_in_batch
    assert ProviderBatch.objects.count() == 1  # no second batch round for the rest
    assert not EmbeddingFailure.objects.exists()


def test_lines_a_batch_failed_go_through_the_api_and_shuffled_output_lands_right(api):
    api.batch_delay, api.batch_line_failure_rate = 0.2, 0.3
    docs = documents(100, "lines")
    drain(batch_api=True, batch_size=4)  # 25 request lines, shuffled in the output
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    [batch] = ProviderBatch.objects.all()
    assert 0 < batch.failed < 100 and batch.vectors + batch.failed == 100
    assert api.inputs == batch.failed and "500" in batch.error


def test_a_request_the_batch_refused_fails_its_rows_alone(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 2}
    api.batch_delay = 0.2
    api.poison = {"POISON"}
    Document.objects.bulk_create([Document(title=f"good {n}") for n in range(8)])
    bad = Document.objects.create(title="POISON pill")
    as_backfill()
    drain(batch_api=True, batch_size=3, concurrency=1)
    assert len(embedded_pks(Document)) == 8
    [failure] = EmbeddingFailure.objects.all()
    assert failure.object_pk == str(bad.pk)
    [batch] = ProviderBatch.objects.all()
    assert batch.failed == 3 and "poison" in batch.error


def test_chunks_of_long_documents_go_through_the_batch_api_too(api):
    from tests.helpers import prose

    api.batch_delay = 0.2
    manual = Manual.objects.create(title="Manual", body=prose(20))
    as_backfill("testapp.Manual.embedding")
    drain(batch_api=True)
    chunks = list(ManualChunk.objects.filter(parent=manual))
    assert len(chunks) > 1 and api.inputs == 0
    assert sorted(api.batch_texts) == sorted(c.text for c in chunks)


def test_a_worker_restarted_mid_batch_picks_it_up_and_submits_nothing_twice(api):
    api.batch_delay = 4
    docs = documents(10, "restart")
    first = start_worker("--batch-api", "--concurrency", "1")
    wait_for(
        lambda: ProviderBatch.objects.filter(state="submitted").exists(),
        message="the batch to be submitted",
    )
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert embedded_pks(Document) == set() and hidden_messages() == 1
    second = start_worker("--batch-api", "--once")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert len(api.batches) == 1 and api.inputs == 0
    assert queue_messages() == []


@pytest.mark.parametrize("gone", ["output file", "batch"])
def test_a_batch_or_output_the_provider_lost_gives_its_jobs_back_for_a_new_batch(api, gone):
    api.batch_delay = 0.1
    docs = documents(4, "lost")
    batches = submit_all()
    [record] = ProviderBatch.objects.all()
    wait_for(lambda: api._batch(record.batch_id)["status"] == "completed", message="the batch")
    if gone == "batch":
        api.batches.clear()
    else:
        api.files.clear()
    assert batches.poll(force=True) == 0  # 404: over, not in flight for ever
    record.refresh_from_db()
    assert record.state == "done" and "404" in record.error
    drain(batch_api=True)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert ProviderBatch.objects.count() == 2 and api.inputs == 0


def test_a_batch_of_a_config_no_longer_declared_is_given_up_without_a_crash(api):
    documents(1, "orphaned")
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
    documents(1, "looked at")
    batches = submit_all()
    seen = []
    real = OpenAIProvider.batch_status

    def status(self, batch_id):
        seen.append(connections["default"].in_atomic_block)
        return real(self, batch_id)

    monkeypatch.setattr(OpenAIProvider, "batch_status", status)
    wait_for(lambda: batches.poll(force=True) == 0, message="the batch to end")
    assert seen and not any(seen)


def test_a_workers_bookkeeping_does_not_grow_with_the_batches_finished():
    def queries_of_a_poll() -> int:
        batches = Batches("default", poll_every=3600)
        with CaptureQueriesContext(connection) as first:
            batches.poll()
        with CaptureQueriesContext(connection) as again:
            batches.poll()  # not due: no query at all
        assert len(again) == 0
        return len(first)

    before = queries_of_a_poll()
    ProviderBatch.objects.bulk_create(
        [
            ProviderBatch(config=DOCS, model="m", state="done", keys=b"", messages=[1, 2])
            for _ in range(600)
        ]
    )
    assert queries_of_a_poll() == before == 1
    query, params = ProviderBatch.objects.exclude(state="done").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("set enable_seqscan = off")
        cursor.execute("explain " + query, params)
        plan = " ".join(r[0] for r in cursor.fetchall())
        cursor.execute("reset enable_seqscan")
    assert "autoembed_batch_in_flight" in plan  # the finished ones are not even looked at


def test_the_estimate_prints_rows_tokens_and_prices_and_sends_nothing(api, monkeypatch):
    # A price that shows in four decimals for a few thousand tokens.
    prices = {"PRICES": {"text-embedding-3-small": 1000.0}}
    monkeypatch.setenv("AUTOEMBED_TEST_OVERRIDES", json.dumps(prices))
    docs = Document.objects.bulk_create(
        [Document(title=f"estimated {n}", content="words " * n) for n in range(50)]
    )
    purge_queue()
    worker = start_worker("--batch-api", "--estimate", "--config", DOCS)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    expected = total_tokens(docs)
    line = next(x for x in out.splitlines() if DOCS in x)
    assert "50 rows" in line
    counted = int(line.split("~")[1].split(" tokens")[0].replace(",", ""))
    assert counted == pytest.approx(expected, rel=0.01)  # 50 rows: the sample is all of them
    api_price = counted * 1000.0 / 1e6
    assert f"${api_price:,.4f}" in line and f"${api_price / 2:,.4f}" in line
    assert api.requests == 0 and api.files == {} and queue_messages() == []
    assert not ProviderBatch.objects.exists()


# -- what a hostile review proved, kept proved ---------------------------------------------


def test_a_budget_nearly_spent_keeps_the_backfill_waiting_not_at_full_price(api, settings):
    """With less room left than one row takes, the backfill waits for the next batch: no
    row is sent to the embeddings API because the room left is small."""
    titles = [f"same {i}" for i in range(10, 40)]
    [per_row] = {tokens(t) for t in titles}
    Document.objects.bulk_create([Document(title=t) for t in titles])
    as_backfill()  # one message of 30 rows
    # 10.5 rows' worth: a share of 2.6 rows, two rows a batch, half a row left after five.
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": int(per_row * 10.5)}
    api.batch_delay = 0.5
    drain(batch_api=True, concurrency=1)
    assert len(embedded_pks(Document)) == 30
    assert api.inputs == 0 and len(api.batch_texts) == 30


def test_a_slow_upload_another_worker_adopted_is_not_cancelled(api, monkeypatch):
    from django_autoembed.providers.openai import OpenAIProvider

    api.batch_delay = 0.5
    documents(5, "slow")
    real = OpenAIProvider.submit_batch

    def slow(self, *args, **kwargs):
        batch_id = real(self, *args, **kwargs)
        # Its lease runs out before it is done: another worker finds the batch and adopts it.
        ProviderBatch.objects.update(leased_until=timezone.now() - timedelta(seconds=1))
        Batches("default", poll_every=0).poll(force=True)
        assert ProviderBatch.objects.get().state == "submitted"
        return batch_id

    monkeypatch.setattr(OpenAIProvider, "submit_batch", slow)
    submit_all()
    monkeypatch.setattr(OpenAIProvider, "submit_batch", real)
    assert [b["status"] for b in api.batches.values()] != ["cancelled"]
    drain(batch_api=True)
    assert len(embedded_pks(Document)) == 5 and api.inputs == 0


def test_a_filling_that_outlived_its_hold_submits_nothing_another_worker_holds(api, monkeypatch):
    import time

    import django_autoembed.batches as batches_module

    monkeypatch.setattr(batches_module, "FILL_HOLD", 1)  # as if ten minutes went by
    api.batch_delay = 60
    documents(5, "twice")
    stalled = Batches("default", divert=True, poll_every=0)
    with connection.cursor() as cursor:
        first = read(cursor, 1000, 30)
    stalled.divert(Processor(), first)  # filled; then its lane stalls past the hold
    time.sleep(1.5)
    submit_all()  # another worker reads the same jobs and submits them
    stalled.submit_due(100, everything=True)  # the stalled lane wakes up
    assert len(api.batches) == 1
    [record] = ProviderBatch.objects.all()
    assert [m["held_for"] for m in queue_messages()] == [record.pk]


def test_non_ascii_texts_are_sized_as_the_file_writes_them(api, monkeypatch):
    """The file's JSON escapes each non-ASCII character (6 bytes for 3): a batch is sized by
    what it uploads, so the API never refuses it as too large."""
    monkeypatch.setattr(filling, "MAX_FILE_BYTES", 60_000)
    api.batch_max_bytes, api.batch_delay = 60_000, 0.2
    text = "日本語の文章です。" * 40  # 1,080 bytes in UTF-8, 2,160 in the file
    Document.objects.bulk_create([Document(title=f"{i} {text}") for i in range(100)])
    as_backfill()
    drain(batch_api=True)
    assert len(embedded_pks(Document)) == 100 and api.inputs == 0
    assert not Incident.objects.filter(kind="batch_submit").exists()
    assert ProviderBatch.objects.count() >= 4


def test_the_estimate_counts_only_rows_with_text(api):
    from django_autoembed.batches import estimate

    config = registry.get(DOCS)
    assert estimate.estimate([config])[0].rows == 0  # an empty table
    title = "a sentence of some eight words here"
    Document.objects.bulk_create([Document(title=title) for _ in range(10)])
    Document.objects.bulk_create([Document(title="") for _ in range(90)])
    purge_queue()
    [found] = estimate.estimate([config])
    assert found.rows == 10 == backfill(config) and found.tokens == 10 * tokens(title)
    assert found.inputs == 10 and found.batches == 1
    assert found.size == 10 * filling.input_bytes(title)  # as the batch's file counts it


def test_the_estimate_counts_a_chunked_configs_inputs_in_chunks(api):
    from django_autoembed.batches import estimate
    from tests.helpers import SENTENCES

    body = " ".join(SENTENCES * 6)  # several 120-token chunks a row
    Manual.objects.bulk_create([Manual(title=f"manual {i}", body=body) for i in range(20)])
    purge_queue()
    [found] = estimate.estimate([registry.get("testapp.Manual.embedding")])
    backfill(registry.get("testapp.Manual.embedding"))
    drain()
    chunks = ManualChunk.objects.count()
    assert found.rows == 20 and chunks > 40
    assert abs(found.inputs - chunks) <= chunks * 0.25, (found.inputs, chunks)


def test_a_row_too_large_for_any_batch_goes_to_the_api_and_spends_its_attempts(api, settings):
    from tests.helpers import archived_count

    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": 4, "MAX_ATTEMPTS": 3}
    documents(1, "always failing row")
    api.poison, api.poison_status = {"always failing row"}, 500
    batches = Batches("default", divert=True, poll_every=0)
    for _ in range(6):
        with connection.cursor() as cursor:
            cursor.execute("update pgmq.q_embedding_jobs set vt = now()")
            messages = read(cursor, 1000, 30)
        if not messages:
            break
        Processor().process(batches.divert(Processor(), messages))
    assert archived_count() == 1 and EmbeddingFailure.objects.count() == 1
    assert api.batches == {}


def test_a_batch_workers_backlog_counts_the_backfill_of_a_provider_without_batches(settings):
    """A provider with no Batch API: a --batch-api worker embeds its backfill itself, so
    that backfill is a backlog that may defer its index."""
    from django_autoembed.hnsw.backlog import Backlog

    documents(5, "plain")
    backlog = Backlog("default")
    backlog.skip_backfill = True
    assert backlog.rows(fresh=True) == {}  # OpenAI's: sent to batches
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PROVIDER": "tests.testapp.providers.Custom"}
    assert backlog.rows(fresh=True) == {DOCS: 5}
