"""semantic_search, nearest, similar_to: ranking, composition, the index, caching, errors."""

import numpy as np
import pytest
from django.db import connection, transaction

from django_autoembed.exceptions import ProviderError
from django_autoembed.testing import fake_vector
from tests.conftest import drain, purge_queue
from tests.testapp.models import Article, Document

pytestmark = pytest.mark.django_db(transaction=True)

TEXTS = ["pgvector stores embeddings", "sourdough needs a starter", "trail shoes need grip",
         "migrations change the schema", "pour-over coffee and grind size"]


@pytest.fixture
def docs(api):
    purge_queue()
    made = [Document.objects.create(title=t, views=i) for i, t in enumerate(TEXTS)]
    drain()
    yield made
    purge_queue()


def test_nearest_neighbour_of_a_documents_own_text_is_that_document(docs, api):
    for doc in docs:
        top = Document.objects.semantic_search(doc.title, k=3)
        assert top[0].pk == doc.pk
        assert top[0].distance == pytest.approx(0, abs=1e-3)
        assert [r.distance for r in top] == sorted(r.distance for r in top)


def test_results_compose_with_filter_exclude_slicing_and_values(docs):
    query = docs[0].title
    filtered = Document.objects.filter(views__gte=2).semantic_search(query)
    assert {d.pk for d in filtered} == {d.pk for d in docs[2:]}
    assert docs[0].pk not in Document.objects.semantic_search(query).exclude(pk=docs[0].pk).values_list("pk", flat=True)
    values = list(Document.objects.semantic_search(query).values("title", "distance")[:2])
    assert values[0]["title"] == query and len(values) == 2
    assert Document.objects.semantic_search(query, k=2).count() == 2


def test_rows_without_an_embedding_are_left_out(docs):
    pending = Document.objects.create(title="not embedded yet")
    assert pending.pk not in {d.pk for d in Document.objects.semantic_search("not embedded yet")}


def test_nearest_with_a_vector_in_hand_and_similar_to_excludes_the_object(docs):
    vector = fake_vector(docs[1].title, 1536)
    assert Document.objects.nearest(vector)[0].pk == docs[1].pk
    similar = list(Document.objects.similar_to(Document.objects.get(pk=docs[1].pk), k=10))
    assert docs[1].pk not in {d.pk for d in similar} and len(similar) == len(docs) - 1
    assert list(Document.objects.similar_to(Document(title="unsaved"))) == []


def test_query_embedding_is_cached(docs, api):
    before = api.requests
    for _ in range(5):
        list(Document.objects.semantic_search("a repeated question", k=2))
    assert api.requests == before + 1
    list(Document.objects.semantic_search("another question", k=2))
    assert api.requests == before + 2


def test_model_with_several_embeddings_needs_config(api):
    purge_queue()
    article = Article.objects.create(title="Vectors", body="in Postgres")
    drain()
    with pytest.raises(ValueError, match="several embeddings; pass config= one of: title, body"):
        Article.objects.semantic_search("Vectors")
    assert Article.objects.semantic_search("Vectors", config="title")[0].pk == article.pk
    with pytest.raises(ValueError, match="no embedding 'nope'"):
        Article.objects.semantic_search("Vectors", config="nope")


def test_empty_query_is_a_value_error_and_empty_table_an_empty_result(api):
    with pytest.raises(ValueError, match="non-empty query"):
        Document.objects.semantic_search("  ")
    Document.objects.all().delete()
    assert list(Document.objects.semantic_search("anything")) == []


def test_provider_error_names_the_provider(api):
    api.fail_next(1, status=500)
    with pytest.raises(ProviderError, match="openai: HTTP 500"):
        list(Document.objects.semantic_search("fails once"))


def test_plan_uses_the_hnsw_index_and_filtered_search_still_returns_k_rows(api):
    """A bulk-loaded table with the index built after the load, as after a backfill."""
    from pgvector import HalfVector
    from django_autoembed.indexes import HnswIndex

    index = next(i for i in Document._meta.indexes if isinstance(i, HnswIndex))
    vectors = np.random.default_rng(5).standard_normal((3000, 1536)).astype(np.float32)
    purge_queue()
    with connection.schema_editor() as editor:
        editor.remove_index(Document, index)
    try:
        Document.objects.bulk_create([Document(title=f"row {i}", views=i % 100, embedding=HalfVector(v))
                                      for i, v in enumerate(vectors)], batch_size=1000)
    finally:
        with connection.schema_editor() as editor:
            editor.add_index(Document, index)
    purge_queue()
    with connection.cursor() as cursor:
        cursor.execute("analyze testapp_document")
    query = vectors[7]
    assert f"Index Scan using {index.name}" in Document.objects.nearest(query)[:10].explain()
    # On a table this small the planner prefers an exact scan for a selective
    # filter; turn that off to exercise the index with a filter, as on a big table.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("set local enable_seqscan = off")
        filtered = Document.objects.filter(views=7).nearest(query, ef_search=20)[:10]
        assert f"Index Scan using {index.name}" in filtered.explain()
        # 1 row in 100 passes the filter: a plain index scan stops after its
        # ef_search=20 candidates, holding almost none of them; iterative scans go on.
        rows = list(filtered)
        # the control: the same query without iterative scans comes back short
        cursor.execute("set local hnsw.iterative_scan = off")
        cursor.execute(*filtered.query.sql_with_params())
        assert len(cursor.fetchall()) < 10
    assert len(rows) == 10 and all(r.views == 7 for r in rows)
    assert rows[0].title == "row 7"
    assert [r.distance for r in rows] == sorted(r.distance for r in rows)
