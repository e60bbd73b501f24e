"""A wrong key, model or dimensions pauses work loudly; it never spends attempts or dead-letters."""

import threading
import time

import pytest
from django.db import connection

from django_autoembed.failures import EmbeddingFailure
from django_autoembed.status import collect
from django_autoembed.testing.fake import limits as fake_limits
from django_autoembed.worker import Worker, default_options
from tests.helpers import archived_count, assert_fake_vector, drain, queued_ids, wait_for
from tests.testapp.models import Document, Quote


def misconfigure(api, settings, what: str) -> str:
    """Break one thing the way a user would; returns what the error must say."""
    if what == "revoked key":
        api.valid_keys = {"the-new-key"}
        return "401"
    if what == "forbidden":
        api.fail_next(10_000, status=403)
        return "403"
    if what == "unknown model":
        api.strict_models = True
        settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": "text-embedding-4-tiny"}
        return "404"
    api.dimensions_override = 768  # "wrong dimensions": every vector has another length
    return "768 dimensions"


def read_counts() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs order by msg_id")
        return [r[0] for r in cursor.fetchall()]


@pytest.mark.parametrize("what", ["revoked key", "forbidden", "unknown model", "wrong dimensions"])
def test_a_configuration_error_pauses_without_spending_attempts(api, settings, what):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    docs = Document.objects.bulk_create([Document(title=f"paused {i}") for i in range(100)])
    said = misconfigure(api, settings, what)

    worker = Worker(default_options(once=True))
    assert worker.run() == 2
    assert "paused" in worker.exit_reason and said in worker.exit_reason
    assert api.requests <= 2  # no splitting a refused key into halves: 995 requests before
    assert not EmbeddingFailure.objects.exists() and archived_count() == 0
    assert sorted(queued_ids()) == sorted(d.pk for d in docs)
    assert set(read_counts()) == {0}  # no attempt spent
    [pause] = collect().paused
    assert said in pause["error"] and "text-embedding" in pause["provider"]


def test_a_400_about_the_dimensions_parameter_is_a_configuration_error(api, settings, monkeypatch):
    # A model that gives at most 1,024 dimensions, asked for the column's 1,536.
    monkeypatch.setitem(fake_limits.MODELS, "text-embedding-3-narrow", (1024, True))
    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "MODEL": "text-embedding-3-narrow",
        "DIMENSIONS": 1536,
        "MAX_ATTEMPTS": 1,
    }
    Document.objects.bulk_create([Document(title=f"dims {i}") for i in range(20)])
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "dimensions" in worker.exit_reason
    assert api.requests == 1 and not EmbeddingFailure.objects.exists()
    assert set(read_counts()) == {0}


def test_dimensions_the_column_cannot_hold_pause_the_config_before_any_request(api, settings):
    Document.objects.bulk_create([Document(title=f"dims {i}") for i in range(20)])
    settings.AUTOEMBED = {**settings.AUTOEMBED, "DIMENSIONS": 768}  # the column holds 1536
    worker = Worker(default_options(once=True))
    assert worker.run() == 2
    assert "holds vectors of 1536 dimensions" in worker.exit_reason
    assert "makemigrations" in worker.exit_reason
    assert api.requests == 0 and not EmbeddingFailure.objects.exists()
    assert set(read_counts()) == {0}


def test_input_errors_still_split_and_fail_only_the_bad_row(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.poison = {"POISON"}
    docs = Document.objects.bulk_create(
        [Document(title=f"fine {i}") for i in range(15)] + [Document(title="POISON")]
    )
    drain()
    assert EmbeddingFailure.objects.get().object_pk == str(docs[-1].pk)
    for doc in docs[:-1]:
        assert_fake_vector(Document, doc.pk, doc.title)


def test_a_running_worker_resumes_by_itself_once_the_key_works_again(api, settings):
    api.valid_keys = {"the-new-key"}
    docs = Document.objects.bulk_create([Document(title=f"later {i}") for i in range(30)])
    worker = Worker(default_options(poll_interval=0.2))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: collect().paused, timeout=15, message="the pause to be recorded")
        requests = api.requests
        time.sleep(1.0)
        assert api.requests == requests  # backing off, not hammering the API
        api.valid_keys = None  # the key is fixed at the provider (or rotated in the secret store)
        wait_for(
            lambda: Document.objects.filter(embedding__isnull=True).count() == 0,
            timeout=30,
            message="the worker to resume",
        )
    finally:
        worker.stop()
        thread.join(30)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert collect().paused == [] and not EmbeddingFailure.objects.exists()


def test_an_outage_spends_no_attempts_and_the_worker_carries_on_after_it(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.failure_rate = 1.0
    api.failure_statuses = (500, 503, 429)
    api.retry_after = 1
    docs = Document.objects.bulk_create([Document(title=f"outage {i}") for i in range(40)])
    worker = Worker(default_options(poll_interval=0.2))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: api.failures >= 3, timeout=20, message="a few failed tries")
        [pause] = collect().paused
        assert pause["error"].startswith("unavailable")
    finally:
        worker.stop()
        thread.join(30)
    assert not EmbeddingFailure.objects.exists() and set(read_counts()) == {0}

    api.failure_rate = 0.0  # the provider is back
    drain()
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert not EmbeddingFailure.objects.exists() and archived_count() == 0
    assert collect().paused == []


def test_a_row_the_provider_always_chokes_on_is_not_mistaken_for_an_outage(api, settings):
    """Alone in its batch, every request fails with a 500; a probe shows the provider is up."""
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 2}
    api.poison, api.poison_status = {"CHOKE"}, 500
    doc = Document.objects.create(title="CHOKE on this")
    for _ in range(2):
        worker = Worker(default_options(once=True))
        assert worker.run() == 0, worker.exit_reason  # no pause: the probe got an answer
    failure = EmbeddingFailure.objects.get()
    assert failure.object_pk == str(doc.pk) and failure.attempts == 2 and "500" in failure.error
    assert collect().paused == []


def test_rate_limits_spend_no_attempts(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1, "BATCH_SIZE": 1}
    docs = Document.objects.bulk_create([Document(title=f"limited {i}") for i in range(4)])
    api.fail_next(2, status=429, retry_after=0)  # two of the four requests, others get through
    for _ in range(3):
        drain()
    assert not EmbeddingFailure.objects.exists()
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


# -- a pause belongs to one provider -------------------------------------------------------


def quote_read_counts() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "select read_ct from pgmq.q_embedding_jobs where message->>'table' = 'testapp_quote'"
        )
        return [r[0] for r in cursor.fetchall()]


def test_a_model_the_account_cannot_use_pauses_its_config_only(api):
    """The README's model-upgrade move: a config on a model the key may not use (404)."""
    api.refused_models = {"text-embedding-3-large"}
    Quote.objects.bulk_create([Quote(text=f"refused {i}") for i in range(10)])  # queued first
    docs = Document.objects.bulk_create([Document(title=f"flowing {i}") for i in range(60)])

    worker = Worker(default_options(once=True))
    assert worker.run() == 2  # the run did all it could, and says what it could not
    assert "text-embedding-3-large" in worker.exit_reason and "404" in worker.exit_reason
    assert "text-embedding-3-small" not in worker.exit_reason
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert Quote.objects.filter(embedding__isnull=False).count() == 0
    assert len(quote_read_counts()) == 1 and set(quote_read_counts()) == {0}  # nothing spent
    assert not EmbeddingFailure.objects.exists()
    [pause] = collect().paused
    assert "text-embedding-3-large" in pause["provider"] and "404" in pause["error"]
    [status] = [c for c in collect().configs if c.config == "testapp.Quote.embedding"]
    assert status.paused and "404" in status.paused

    api.refused_models = set()  # access granted: the next run embeds the rest
    with connection.cursor() as cursor:  # its jobs were hidden for the pause: due now
        cursor.execute("update pgmq.q_embedding_jobs set vt = clock_timestamp()")
    drain()
    for quote in Quote.objects.all():
        assert_fake_vector(Quote, quote.pk, quote.text)
    assert collect().paused == []


def test_a_running_worker_keeps_other_configs_flowing_beside_a_paused_one(api):
    api.refused_models = {"text-embedding-3-large"}
    worker = Worker(default_options(poll_interval=0.2))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        Quote.objects.bulk_create([Quote(text=f"waiting {i}") for i in range(5)])
        wait_for(lambda: collect().paused, timeout=15, message="the pause to be recorded")
        docs = Document.objects.bulk_create([Document(title=f"meanwhile {i}") for i in range(40)])
        wait_for(
            lambda: Document.objects.filter(embedding__isnull=True).count() == 0,
            timeout=15,
            message="the other config's rows, while one provider is paused",
        )
        assert Quote.objects.filter(embedding__isnull=False).count() == 0
        api.refused_models = set()
        wait_for(
            lambda: Quote.objects.filter(embedding__isnull=True).count() == 0,
            timeout=90,
            message="the paused config to resume by itself",
        )
    finally:
        worker.stop()
        thread.join(30)
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert collect().paused == [] and not EmbeddingFailure.objects.exists()


def test_spent_credit_pauses_instead_of_retrying_as_a_rate_limit(api, caplog):
    api.quota_exhausted = True
    docs = Document.objects.bulk_create([Document(title=f"billing {i}") for i in range(10)])
    with caplog.at_level("INFO", logger="django_autoembed"):
        worker = Worker(default_options(once=True))
        started = time.monotonic()
        assert worker.run() == 2
    assert time.monotonic() - started < 10  # no backing off as if it were a rate limit
    assert "insufficient_quota" in worker.exit_reason and "credit" in worker.exit_reason
    assert api.requests <= 2 and set(read_counts()) == {0}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "billing" in errors[0].getMessage()
    api.quota_exhausted = False
    with connection.cursor() as cursor:
        cursor.execute("update pgmq.q_embedding_jobs set vt = clock_timestamp()")
    drain()
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


def test_a_provider_that_cannot_start_pauses_its_configs_only(api, monkeypatch):
    """As a config's provider='local' without sentence-transformers installed would."""
    from django_autoembed import providers
    from django_autoembed.exceptions import ConfigurationError

    real = providers.get_provider

    def get_provider(name=None, *, model, dimensions):
        if model == "text-embedding-3-large":
            raise ConfigurationError("this provider cannot start: install its package.")
        return real(name, model=model, dimensions=dimensions)

    monkeypatch.setattr(providers, "get_provider", get_provider)
    Quote.objects.bulk_create([Quote(text=f"cannot {i}") for i in range(3)])
    docs = Document.objects.bulk_create([Document(title=f"can {i}") for i in range(30)])
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "install its package" in worker.exit_reason
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)
    assert len(quote_read_counts()) == 1 and set(quote_read_counts()) == {0}
