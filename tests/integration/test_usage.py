"""What embedding costs: tokens per config and day, and texts never paid for twice."""

import json

import pytest
from django.core.management import call_command

from django_autoembed.store import StoredVector
from django_autoembed.usage import EmbeddingUsage
from tests.helpers import assert_fake_vector, drain, queue_messages, start_worker
from tests.testapp.models import Document


def test_tokens_are_counted_from_the_apis_usage_per_config_and_day(api, capsys):
    docs = [Document.objects.create(title=f"counted {n}", content="words " * n) for n in range(25)]
    drain(batch_size=10)
    [row] = EmbeddingUsage.objects.all()
    assert row.config == "testapp.Document.embedding" and row.mode == "api"
    assert (row.requests, row.inputs, row.tokens) == (api.requests, len(docs), api.tokens)
    assert row.tokens > 0 and row.cost == pytest.approx(row.tokens * 0.02 / 1e6)
    call_command("autoembed_status", "--json", "--config", "testapp.Document.embedding")
    [status] = json.loads(capsys.readouterr().out)["configs"]
    assert status["tokens_today"] == status["tokens_30d"] == api.tokens
    assert status["cost_30d_usd"] == pytest.approx(row.cost)
    call_command("autoembed_status", "--config", "testapp.Document.embedding")
    table = capsys.readouterr().out
    assert "tokens 30d" in table and f"{api.tokens}" in table and "$0.00" in table


def test_a_model_without_a_price_shows_no_cost(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PRICES": {}}
    Document.objects.create(title="unpriced")
    drain()
    [row] = EmbeddingUsage.objects.all()
    assert row.tokens > 0 and row.cost is None


def test_a_text_one_process_embedded_costs_another_process_nothing(api):
    first = Document.objects.create(title="the same words")
    worker = start_worker("--once")
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert api.inputs == 1 and StoredVector.objects.count() == 1
    # Another row with that text, and the first row queued again (as after an edit and an
    # edit back), in a new process whose memory is empty: the store has the vector.
    twin = Document.objects.create(title="the same words")
    Document.objects.filter(pk=first.pk).update(title="other words")
    Document.objects.filter(pk=first.pk).update(title="the same words")
    worker = start_worker("--once")
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert api.texts == ["the same words"] and queue_messages() == []
    assert_fake_vector(Document, twin.pk, "the same words")
    assert_fake_vector(Document, first.pk, "the same words")


def test_the_store_forgets_what_is_older_than_its_days(api, settings, monkeypatch):
    import time
    from datetime import timedelta

    from django.utils import timezone

    from django_autoembed import store
    from django_autoembed.store import prune

    # The workers below prune at most every PRUNE_EVERY seconds: just pruned, they leave the
    # old entry to the prune under test (a suite slower than that made them prune it first).
    monkeypatch.setitem(store._pruned, "default", time.monotonic())
    Document.objects.create(title="kept a while")
    drain()
    StoredVector.objects.update(created=timezone.now() - timedelta(days=8))
    Document.objects.create(title="fresh")
    drain()
    assert prune("default", force=True) == 1
    assert StoredVector.objects.count() == 1


def test_with_no_days_the_batch_apis_vectors_are_forgotten_after_two(settings):
    """VECTOR_STORE_DAYS = 0 stores only the Batch API's vectors: they are pruned too, once
    their batch's window and its collection are long over."""
    from datetime import timedelta

    from django.utils import timezone

    from django_autoembed.store import prune

    settings.AUTOEMBED = {**settings.AUTOEMBED, "VECTOR_STORE_DAYS": 0}
    StoredVector.objects.all().delete()
    old, new = b"old batch vect..", b"new batch vect.."
    StoredVector.objects.bulk_create(
        [StoredVector(key=old, vector=b"\x00" * 8), StoredVector(key=new, vector=b"\x00" * 8)]
    )
    StoredVector.objects.filter(key=old).update(created=timezone.now() - timedelta(days=3))
    assert prune("default", force=True) == 1
    assert [bytes(k) for k in StoredVector.objects.values_list("key", flat=True)] == [new]
