"""semantic_search, nearest, similar_to: ranking, composition, the index, caching, errors."""

import asyncio
import contextlib
import re

import numpy as np
import pytest
from django.db import connection, transaction
from django.db.models import Count, Min, Prefetch

from django_autoembed.exceptions import ProviderError
from django_autoembed.testing import fake_vector
from tests.helpers import drain, purge_queue
from tests.testapp.models import Article, Book, Document, Shelf

TEXTS = [
    "pgvector stores embeddings",
    "sourdough needs a starter",
    "trail shoes need grip",
    "migrations change the schema",
    "pour-over coffee and grind size",
]


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
    assert docs[0].pk not in Document.objects.semantic_search(query).exclude(
        pk=docs[0].pk
    ).values_list("pk", flat=True)
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

    from django_autoembed.hnsw.indexes import HnswIndex

    index = next(i for i in Document._meta.indexes if isinstance(i, HnswIndex))
    vectors = np.random.default_rng(5).standard_normal((3000, 1536)).astype(np.float32)
    purge_queue()
    with connection.schema_editor() as editor:
        editor.remove_index(Document, index)
    try:
        Document.objects.bulk_create(
            [
                Document(title=f"row {i}", views=i % 100, embedding=HalfVector(v))
                for i, v in enumerate(vectors)
            ],
            batch_size=1000,
        )
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
        # the control: the same query without iterative scans (and without the
        # settings it carries) comes back short
        cursor.execute("set local hnsw.iterative_scan = off")
        cursor.execute("set local hnsw.ef_search = 20")
        plain, params = filtered.query.sql_with_params()
        cursor.execute(re.sub(r"/\* autoembed:hnsw[^*]*\*/", "", plain), params)
        assert len(cursor.fetchall()) < 10
    assert len(rows) == 10 and all(r.views == 7 for r in rows)
    assert rows[0].title == "row 7"
    assert [r.distance for r in rows] == sorted(r.distance for r in rows)


@pytest.fixture
def loaded(api):
    """3,000 rows with vectors, bulk-loaded, the index built after the load; 30 have views == 7."""
    from pgvector import HalfVector

    from django_autoembed.hnsw.indexes import HnswIndex

    index = next(i for i in Document._meta.indexes if isinstance(i, HnswIndex))
    vectors = np.random.default_rng(5).standard_normal((3000, 1536)).astype(np.float32)
    purge_queue()
    with connection.schema_editor() as editor:
        editor.remove_index(Document, index)
    try:
        Document.objects.bulk_create(
            [
                Document(title=f"row {i}", views=i % 100, embedding=HalfVector(v))
                for i, v in enumerate(vectors)
            ],
            batch_size=1000,
        )
    finally:
        with connection.schema_editor() as editor:
            editor.add_index(Document, index)
    purge_queue()
    with connection.cursor() as cursor:
        cursor.execute("analyze testapp_document")
    return vectors[7]


def hnsw_settings_now():
    with connection.cursor() as cursor:
        cursor.execute(
            "select current_setting('hnsw.iterative_scan', true), "
            "current_setting('hnsw.ef_search', true)"
        )
        return cursor.fetchone()


EVALUATIONS = {
    "list": lambda qs: [r.pk for r in qs],
    "iterator": lambda qs: [r.pk for r in qs.iterator()],
    "iterator(chunk_size)": lambda qs: [r.pk for r in qs.iterator(chunk_size=3)],
    "count": lambda qs: qs.count(),
    "exists": lambda qs: qs.exists(),
    "aggregate": lambda qs: qs.aggregate(n=Count("pk"), best=Min("distance")),
    "values": lambda qs: [r["pk"] for r in qs.values("pk")],
    "values_list": lambda qs: list(qs.values_list("pk", flat=True)),
    "subquery": lambda qs: sorted(
        Document.objects.filter(pk__in=qs.values("pk")).values_list("pk", flat=True)
    ),
    "async": lambda qs: asyncio.run(_async_pks(qs)),
}


async def _async_pks(qs):
    return [r.pk async for r in qs]


def expected_for(rows):
    pks = [r.pk for r in rows]
    return {
        "list": pks,
        "iterator": pks,
        "iterator(chunk_size)": pks,
        "count": len(pks),
        "exists": True,
        "aggregate": {"n": len(pks), "best": rows[0].distance},
        "values": pks,
        "values_list": pks,
        "subquery": sorted(pks),
        "async": pks,
    }


@pytest.mark.parametrize("in_transaction", [False, True])
def test_every_way_of_evaluating_a_filtered_search_gives_the_same_rows(loaded, in_transaction):
    search = Document.objects.filter(views=7).nearest(loaded, ef_search=20)[:10]
    with contextlib.ExitStack() as stack:
        if in_transaction:
            stack.enter_context(transaction.atomic())
        with connection.cursor() as cursor:  # as on a big table: the index, not an exact scan
            cursor.execute(
                "set local enable_seqscan = off" if in_transaction else "set enable_seqscan = off"
            )
        before = hnsw_settings_now()
        rows = list(search)
        assert len(rows) == 10 and rows[0].title == "row 7" and all(r.views == 7 for r in rows)
        expected = expected_for(rows)
        for name, evaluate in EVALUATIONS.items():
            got = evaluate(search)
            if name == "aggregate":
                assert got["n"] == expected[name]["n"] and got["best"] == pytest.approx(
                    expected[name]["best"]
                )
            else:
                assert got == expected[name], name
            # the search's settings held for the search and for nothing after it
            assert hnsw_settings_now() == before, name
        if not in_transaction:
            with connection.cursor() as cursor:
                cursor.execute("reset enable_seqscan")


def test_another_querysets_iterator_over_a_search_subquery_in_a_transaction(loaded):
    """The outer query reads through a server-side cursor: the settings hold until it closes."""
    search = Document.objects.filter(views=7).nearest(loaded, ef_search=20)[:10]
    outer = Document.objects.filter(pk__in=search.values("pk")).order_by("pk")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("set local enable_seqscan = off")
        before = hnsw_settings_now()
        expected = [d.pk for d in outer]
        assert len(expected) == 10
        assert [d.pk for d in outer.iterator(chunk_size=3)] == expected
        assert hnsw_settings_now() == before


def test_an_error_before_the_server_sees_a_search_leaves_no_settings_behind(loaded):
    from django.db import DataError

    with transaction.atomic():
        before = hnsw_settings_now()
        with pytest.raises((DataError, ValueError)):
            list(Document.objects.filter(title="bad\x00input").nearest(loaded, ef_search=999)[:3])
        assert hnsw_settings_now() == before
        assert Document.objects.filter(views=7).count() == 30  # the transaction goes on


def test_a_search_in_a_prefetch_ranks_each_parents_rows(api):
    shelves = [Shelf.objects.create(name=f"shelf {n}") for n in range(2)]
    for shelf in shelves:
        Book.objects.bulk_create(
            [Book(shelf=shelf, title=f"{shelf.name} book {i}") for i in range(5)]
        )
    drain()
    query = fake_vector("shelf 1 book 3", 1536)
    with transaction.atomic():
        before = hnsw_settings_now()
        found = {
            s.name: [b.title for b in s.top_books]
            for s in Shelf.objects.prefetch_related(
                Prefetch(
                    "books",
                    queryset=Book.objects.nearest(query, ef_search=80)[:2],
                    to_attr="top_books",
                )
            )
        }
        assert hnsw_settings_now() == before
    assert found["shelf 1"][0] == "shelf 1 book 3" and len(found["shelf 1"]) == 2
    assert len(found["shelf 0"]) == 2 and all(t.startswith("shelf 0") for t in found["shelf 0"])


def test_no_private_queryset_method_is_overridden():
    from django.db.models import QuerySet

    from django_autoembed.search import EmbeddingQuerySet

    private = [
        name
        for name in vars(EmbeddingQuerySet)
        if name.startswith("_") and not name.startswith("__") and hasattr(QuerySet, name)
    ]
    # The one exception: a search of a model change's new column, compiled before the
    # cutover renamed it and run after, is compiled again (test_change_cases). _fetch_all
    # has evaluated every QuerySet since Django 1.0; the tox matrix runs the newest Django.
    assert private == ["_fetch_all"]


@pytest.fixture
def own_fake(settings):
    # The README's "Testing your own app" fixture, as a user writes it.
    from django_autoembed.testing import FakeEmbeddingsServer

    with FakeEmbeddingsServer(vectors="related") as server:
        settings.AUTOEMBED = {**settings.AUTOEMBED, "BASE_URL": server.base_url, "API_KEY": "k"}
        yield server


def test_the_readmes_test_of_a_users_own_app_passes(own_fake):
    from django.core.management import call_command

    purge_queue()
    Document.objects.create(title="Sourdough", content="a starter, flour and a slow rise")
    Document.objects.create(title="Trail shoes", content="grip, drop and a rock plate")
    Document.objects.create(title="Espresso", content="a fine grind and nine bars")
    call_command("process_embeddings", "--once")
    for query, title in [
        ("bread with a starter", "Sourdough"),
        ("shoes with grip for trails", "Trail shoes"),
        ("a fine grind for espresso", "Espresso"),
    ]:
        assert Document.objects.semantic_search(query)[0].title == title
    # the three rows and the three queries, all through this server (the rows in one
    # request or more, as the worker's lanes happen to take them)
    assert own_fake.inputs == 6
    purge_queue()


# -- odd queries, and what searching costs ------------------------------------------------------


@pytest.mark.parametrize("method", ["semantic_search", "hybrid_search"])
@pytest.mark.parametrize(
    ("text", "said"),
    [("pgvector\x00stores", "NUL character (at 8)"), ("grip \ud800 shoes", "unpaired surrogate")],
)
def test_a_query_postgres_cannot_hold_is_refused_saying_where(docs, api, method, text, said):
    from django_autoembed.exceptions import InvalidValue

    sent = api.requests
    with pytest.raises(InvalidValue, match=re.escape(said)):
        list(getattr(Document.objects, method)(text, k=3))
    assert api.requests == sent  # refused before anything was paid for


def test_a_query_of_megabytes_is_searched_by_its_start_on_both_sides(docs, api):
    huge = "pgvector stores embeddings " * 52_000  # 1.4 MB: too big for a tsquery whole
    found = list(Document.objects.hybrid_search(huge, k=3))
    assert found and found[0].pk == docs[0].pk
    assert list(Document.objects.semantic_search(huge, k=3))


def test_searches_are_counted_in_usage_and_cost_apart_from_embedding(docs, api):
    from django_autoembed.status import collect
    from django_autoembed.usage import EmbeddingUsage, flush_queries

    flush_queries()  # what earlier tests searched is written now, whoever was writing it
    EmbeddingUsage.objects.filter(mode="query").delete()
    before = api.tokens
    Document.objects.semantic_search("which shoes grip on wet rock", k=2).first()
    Document.objects.hybrid_search("which shoes grip on wet rock", k=2).first()  # cached
    Document.objects.semantic_search("coffee grinders compared", k=2).first()
    flush_queries()  # (a thread of its own writes them every two seconds)
    [row] = EmbeddingUsage.objects.filter(mode="query")
    assert row.config == "testapp.Document.embedding" and row.requests == row.inputs == 2
    assert row.tokens == api.tokens - before > 0  # what the provider billed
    [status] = [c for c in collect().configs if c.config == "testapp.Document.embedding"]
    assert status.tokens_today >= row.tokens


def test_a_search_in_a_read_only_transaction_or_beside_an_open_one_never_waits(docs, api):
    """Counting a query must not lock the day's usage row inside the caller's transaction."""
    import threading
    import time

    from django.db import connections

    from django_autoembed.usage import flush_queries

    released = threading.Event()

    def hold():  # a request that searched and keeps its transaction open
        try:
            with transaction.atomic():
                Document.objects.semantic_search("alpha query", k=1).first()
                released.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.5)
    started = time.monotonic()
    Document.objects.semantic_search("beta query", k=1).first()
    flush_queries()
    assert time.monotonic() - started < 2
    released.set()
    holder.join(10)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("set transaction read only")
        assert Document.objects.semantic_search("gamma query", k=1).first() is not None
    flush_queries()


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_k_is_a_number_of_rows_or_none(docs, k):
    from django_autoembed.exceptions import InvalidValue

    with pytest.raises(InvalidValue, match="whole number of at least 1"):
        Document.objects.semantic_search("anything", k=k)
    with pytest.raises(InvalidValue, match="whole number of at least 1"):
        Document.objects.hybrid_search("anything", k=k)


def test_a_raw_tsquery_that_does_not_parse_says_so_before_the_search(docs, api):
    from django_autoembed.exceptions import InvalidValue

    with pytest.raises(InvalidValue, match="not valid tsquery syntax"):
        Document.objects.hybrid_search("pgvector & (", query_type="raw", k=3)
    found = list(Document.objects.hybrid_search("pgvector & embeddings", query_type="raw", k=3))
    assert found[0].pk == docs[0].pk
