"""The foundation: migrations installed pgmq, the queue and schema; the fake API behaves."""

import json

import numpy as np
import openai
import pytest
from django.core.management import call_command
from django.db import connection

from django_autoembed.testing import FakeEmbeddingsServer, fake_vector, related_vectors


def scalar(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_migration_created_schema_queue_and_extensions():
    assert scalar("select count(*) from pg_namespace where nspname = 'autoembed'") == 1
    assert scalar("select count(*) from pgmq.meta where queue_name = 'embedding_jobs'") == 1
    assert scalar("select count(*) from pg_extension where extname = 'vector'") == 1
    assert scalar("select autoembed.queue_name()") == "embedding_jobs"


@pytest.mark.django_db
def test_pgmq_send_read_round_trip():
    msg_id = scalar(
        "select * from pgmq.send('embedding_jobs', %s::jsonb)", [json.dumps({"hello": 1})]
    )
    with connection.cursor() as cursor:
        cursor.execute("select msg_id, read_ct, message from pgmq.read('embedding_jobs', 30, 10)")
        rows = cursor.fetchall()
    assert [(r[0], r[1]) for r in rows] == [(msg_id, 1)]
    assert json.loads(rows[0][2]) if isinstance(rows[0][2], str) else rows[0][2] == {"hello": 1}
    assert scalar("select pgmq.delete('embedding_jobs', %s::bigint)", [msg_id]) is True


def test_fake_api_answers_openai_client(api):
    client = openai.OpenAI(api_key="k", base_url=api.base_url, max_retries=0)
    response = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=64, encoding_format="float"
    )
    assert [len(d.embedding) for d in response.data] == [64, 64]
    assert response.data[0].embedding == pytest.approx(fake_vector("a", 64).tolist(), abs=1e-6)
    single = client.embeddings.create(
        model="m", input="a", dimensions=64
    )  # the client's base64 default
    assert single.data[0].embedding == pytest.approx(fake_vector("a", 64).tolist(), abs=1e-6)
    assert api.requests == 2 and api.inputs == 3


def test_fake_api_fails_on_demand(api):
    client = openai.OpenAI(api_key="k", base_url=api.base_url, max_retries=0, timeout=0.5)
    api.fail_next(1, status=500)
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="m", input="x")
    api.fail_next(1, status=429, retry_after=7)
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model="m", input="x")
    assert info.value.response.headers["retry-after"] == "7"
    api.fail_next(1, status=200, hang=1.5)
    with pytest.raises(openai.APITimeoutError):
        client.embeddings.create(model="m", input="x")
    assert client.embeddings.create(model="m", input="x").data


def test_related_vectors_put_texts_that_share_wording_near_each_other(api):
    texts = [
        "Sourdough bread needs a starter, flour, water and a long, slow rise.",
        "A slow rise and a lively starter make the best sourdough bread.",
        "The index is rebuilt in bulk after the backfill, with parallel workers.",
        "",
        "ab",
    ]
    v = related_vectors(texts, 256)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2
    assert float(v[0] @ v[1]) < 0.99  # near, not the same vector
    assert np.allclose(related_vectors(texts[2:3], 256)[0], v[2], atol=1e-6)  # alone or batched
    client = openai.OpenAI(api_key="k", base_url=api.base_url, max_retries=0)
    api.vectors = "related"
    got = client.embeddings.create(model="m", input=texts[:2], dimensions=256).data
    assert got[1].embedding == pytest.approx(v[1].tolist(), abs=1e-6)
    api.reset()
    assert api.vectors == "distinct"
    assert client.embeddings.create(model="m", input="ab", dimensions=256).data[
        0
    ].embedding == pytest.approx(fake_vector("ab", 256).tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="distinct"):
        FakeEmbeddingsServer(vectors="similar")
    with pytest.raises(ValueError, match="related"):
        api.vectors = "similar"
    assert api.vectors == "distinct"


@pytest.mark.django_db(transaction=True)
def test_migrate_twice_and_back_to_zero():
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    call_command("migrate", "testapp", "zero", verbosity=0)
    call_command("migrate", "django_autoembed", "zero", verbosity=0)
    try:
        assert (
            scalar("select count(*) from pg_namespace where nspname in ('autoembed', 'pgmq')") == 0
        )
        assert scalar("select count(*) from pg_proc where proname like 'testapp_%%_input'") == 0
    finally:
        call_command("migrate", verbosity=0)
    assert scalar("select count(*) from pgmq.meta where queue_name = 'embedding_jobs'") == 1
