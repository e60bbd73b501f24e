"""Hybrid search: full-text and vector candidates fused by Reciprocal Rank Fusion."""

import json
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_autoembed.exceptions import InvalidValue
from tests.helpers import drain
from tests.testapp.models import Document

LABELLED = Path(__file__).resolve().parents[2] / "bench" / "hybrid_set.json"


@pytest.fixture
def corpus(api):
    texts = {
        "exact": ("ZX-4471 manual", ""),  # the query's own text: nearest, and a text match
        "code": ("Servicing the ZX-4471", "The manual for technicians, ZX-4471 edition."),
        "other": ("Servicing the ZX-4417", "The manual for technicians, ZX-4417 edition."),
        **{f"noise{n}": (f"Unrelated note {n}", "nothing to see") for n in range(12)},
    }
    docs = {key: Document.objects.create(title=t, content=c) for key, (t, c) in texts.items()}
    drain()
    return docs


def test_rows_in_both_lists_come_first_and_each_side_is_annotated(corpus):
    found = list(Document.objects.hybrid_search("ZX-4471 manual", k=5))
    first, second = found[:2]
    assert first.pk == corpus["exact"].pk and second.pk == corpus["code"].pk
    assert first.vector_rank == 1 and first.distance == pytest.approx(0, abs=1e-3)
    assert {first.text_rank, second.text_rank} == {1, 2} and first.text_score > 0
    # A text match beats the rows found by meaning only; those have no text rank.
    assert all(f.text_rank is None and f.vector_rank for f in found[2:]), [
        (f.title, f.vector_rank, f.text_rank, f.score) for f in found
    ]
    scores = [f.score for f in found]
    assert scores == sorted(scores, reverse=True)
    assert first.score == pytest.approx(1 / 61 + 1 / (60 + first.text_rank))


def test_one_statement_the_index_serves_and_filters_choose_the_candidates(corpus):
    with CaptureQueriesContext(connection) as queries:
        found = list(Document.objects.exclude(pk=corpus["exact"].pk).hybrid_search("ZX-4471", k=3))
    # One statement (the query's embedding came from the fake API, over HTTP); the others
    # around it are the HNSW scan's settings, set and given back.
    searches = [q["sql"] for q in queries if "testapp_document" in q["sql"]]
    assert len(searches) == 1
    assert found[0].pk == corpus["code"].pk and corpus["exact"].pk not in {f.pk for f in found}
    # The text side can be read through its GIN index. Over a table this small the planner
    # may also walk another index and filter, so only the reads an index condition serves are
    # left to it (a bitmap scan; a walk of the whole primary key is a plain index scan).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("analyze testapp_document")
        cursor.execute("set local enable_seqscan = off")
        cursor.execute("set local enable_indexscan = off")
        plan = Document.objects.hybrid_search("ZX-4471", k=3).explain()
    assert "Bitmap Index Scan on testapp_document_embedding_fts" in plan, plan


def test_it_composes_like_any_queryset(corpus):
    qs = Document.objects.filter(title__startswith="Servicing").hybrid_search("ZX-4471")
    assert qs.count() == 2 and qs.exists()
    assert qs.values_list("title", flat=True).first() == "Servicing the ZX-4471"
    rows = list(qs.values("title", "score", "text_rank")[:1])
    assert rows[0]["text_rank"] == 1 and rows[0]["score"] > 0
    inner = Document.objects.hybrid_search("ZX-4471", k=2).values("pk")
    assert set(Document.objects.filter(pk__in=inner).values_list("pk", flat=True)) == {
        corpus["code"].pk,
        corpus["exact"].pk,
    }
    text_only = list(Document.objects.hybrid_search("ZX-4471", weights=(0, 1), k=2))
    assert {f.pk for f in text_only} == {corpus["code"].pk, corpus["exact"].pk}


def test_ranks_are_ranks_within_each_sides_candidates(corpus):
    found = list(Document.objects.hybrid_search("ZX-4471 manual", candidates=1))
    assert sum(f.text_rank is not None for f in found) == 1
    assert sum(f.vector_rank is not None for f in found) == 1
    assert len(found) <= 2


def test_bad_arguments_are_refused_with_what_to_do(corpus):
    with pytest.raises(InvalidValue, match="non-empty"):
        Document.objects.hybrid_search("  ")
    with pytest.raises(InvalidValue, match="query_type"):
        Document.objects.hybrid_search("x", query_type="fuzzy")
    with pytest.raises(InvalidValue, match="weights"):
        Document.objects.hybrid_search("x", weights=(1, -1))


def test_an_async_view_searches_both_ways(corpus, client):
    answer = client.get("/async-search/", {"q": "ZX-4471 manual"}).json()
    assert answer["hybrid"][0] == answer["semantic"][0] == "ZX-4471 manual"
    assert answer["hybrid"][1] == "Servicing the ZX-4471"


# -- quality, measured on a labelled set with the local model ----------------------------


def recall_at(k: int, ranked: list[str], relevant: str) -> float:
    return 1.0 if relevant in ranked[:k] else 0.0


def test_hybrid_recall_beats_either_side_on_every_query_class(api, settings):
    pytest.importorskip("sentence_transformers", reason="the local extra is not installed here")
    from example_project.documents.models import Document as Example

    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "PROVIDER": "local",
        "MODEL": "all-MiniLM-L6-v2",
        "DIMENSIONS": 384,
    }
    labelled = json.loads(LABELLED.read_text())
    ids = {}
    for doc in labelled["documents"]:
        ids[Example.objects.create(title=doc["title"], content=doc["content"]).pk] = doc["id"]
    drain()
    totals: dict[str, dict[str, list[float]]] = {}
    for q in labelled["queries"]:
        vector = [ids[d.pk] for d in Example.objects.semantic_search(q["query"], k=5)]
        found = list(Example.objects.hybrid_search(q["query"], k=20))
        hybrid = [ids[d.pk] for d in found[:5]]
        text = [ids[d.pk] for d in sorted(found, key=lambda d: d.text_rank or 1e9) if d.text_rank]
        for side, ranked in (("vector", vector), ("text", text), ("hybrid", hybrid)):
            totals.setdefault(q["class"], {}).setdefault(side, []).append(
                recall_at(5, ranked, q["relevant"])
            )
    means = {c: {s: sum(v) / len(v) for s, v in sides.items()} for c, sides in totals.items()}
    print("recall@5 by class:", json.dumps(means, indent=1))
    for cls, m in means.items():
        assert m["hybrid"] >= max(m["vector"], m["text"]), (cls, m)
    overall = [r for sides in totals.values() for r in sides["hybrid"]]
    assert sum(overall) / len(overall) >= 0.9, means
    # The set is what it claims: each side alone fails on the class made against it.
    assert means["exact"]["vector"] < 1 and means["paraphrase"]["text"] < 0.5, means
