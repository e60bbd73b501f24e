"""Shared fixtures: the fake OpenAI server and queue helpers on the real database."""

from __future__ import annotations

import os

import numpy as np
import pytest
from django.db import connection

from django_autoembed.search import query_cache
from django_autoembed.testing import FakeEmbeddingsServer, fake_vector


@pytest.fixture(scope="session")
def fake_api():
    with FakeEmbeddingsServer() as server:
        os.environ["AUTOEMBED_TEST_BASE_URL"] = server.base_url
        yield server


@pytest.fixture(autouse=True)
def api(fake_api, settings):
    """Every test talks to the loopback fake, reset to no latency and no failures."""
    fake_api.reset()
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BASE_URL": fake_api.base_url}
    query_cache.clear()
    return fake_api


def queue_messages(queue: str = "embedding_jobs") -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(f"select message from pgmq.q_{queue} order by msg_id")
        return [row[0] if isinstance(row[0], dict) else __import__("json").loads(row[0]) for row in cursor.fetchall()]


def queued_ids(queue: str = "embedding_jobs") -> list:
    ids = []
    for m in queue_messages(queue):
        ids.extend(m["ids"] if "ids" in m else [m["id"]])
    return ids


def purge_queue(queue: str = "embedding_jobs") -> None:
    with connection.cursor() as cursor:
        cursor.execute("select pgmq.purge_queue(%s)", [queue])
        cursor.execute(f"delete from pgmq.a_{queue}")


def stored_vector(model, pk, column: str = "embedding"):
    value = model.objects.filter(pk=pk).values_list(column, flat=True).get()
    return None if value is None else np.asarray(value.to_list() if hasattr(value, "to_list") else value, dtype=np.float32)


def assert_fake_vector(model, pk, text: str, column: str = "embedding", dims: int = 1536) -> None:
    stored = stored_vector(model, pk, column)
    assert stored is not None, f"{model.__name__} {pk} has no embedding"
    np.testing.assert_allclose(stored, fake_vector(text, dims), atol=2e-3)
