"""Hybrid search: its quality on the labelled set, and its latency over 100,000 rows.

Quality: the labelled set of ``bench/hybrid_set.json`` (exact codes and names among
look-alikes, paraphrases, and plain keyword queries), embedded with the local model
(all-MiniLM-L6-v2), recall@5 and recall@1 of the search by meaning alone, the full-text
search alone, and ``hybrid_search``, per query class.

Latency: 100,000 rows of real prose (paragraphs of the docstrings of installed packages)
with 384-d vectors (clustered, as embeddings are), the text search GIN index the config
declares and no HNSW index first, then with it; queries of two or three words taken from
the rows; ``hybrid_search(q, k=10)`` through the ORM with the query's embedding cached (the
database's part), p50 and p95, beside ``semantic_search`` and the full-text side alone.

    python -m bench.hybrid [--rows 100000] [--queries 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

from . import common

HERE = Path(__file__).resolve().parent
TABLE = "benchapp_hybriddoc"
DIMS = 384


def quality() -> dict | None:
    """Recall on the labelled set with the local model (None when it is not installed)."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        print("quality: the local extra is not installed; skipped")
        return None
    from django.conf import settings

    from bench.benchapp.models import HybridDoc

    labelled = json.loads((HERE / "hybrid_set.json").read_text())
    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "PROVIDER": "local",
        "MODEL": "all-MiniLM-L6-v2",
        "DIMENSIONS": DIMS,
    }
    from django_autoembed.providers import get_provider

    provider = get_provider("local", model="all-MiniLM-L6-v2", dimensions=DIMS)
    common.execute(f"truncate {TABLE}")
    ids = {}
    # The title goes into the content: the bench table embeds and searches one field.
    texts = [f"{d['title']}\n\n{d['content']}" for d in labelled["documents"]]
    vectors = provider.embed(texts)
    for doc, text, vector in zip(labelled["documents"], texts, vectors, strict=True):
        row = HybridDoc.objects.create(category=0, content=text)
        HybridDoc.objects.filter(pk=row.pk).update(embedding=list(map(float, vector)))
        ids[row.pk] = doc["id"]
    common.purge_queue()
    scores: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for q in labelled["queries"]:
        found = list(HybridDoc.objects.hybrid_search(q["query"], k=20))
        by_meaning = [ids[d.pk] for d in HybridDoc.objects.semantic_search(q["query"], k=5)]
        by_text = [
            ids[d.pk] for d in sorted(found, key=lambda d: d.text_rank or 1e9) if d.text_rank
        ]
        fused = [ids[d.pk] for d in found]
        for side, ranked in (("vector", by_meaning), ("text", by_text), ("hybrid", fused)):
            hit5 = float(q["relevant"] in ranked[:5])
            hit1 = float(bool(ranked) and ranked[0] == q["relevant"])
            scores.setdefault(q["class"], {}).setdefault(side, []).append((hit5, hit1))
    out: dict = {}
    for cls, sides in scores.items():
        out[cls] = {
            side: {
                "recall_at_5": statistics.mean(h5 for h5, _ in hits),
                "recall_at_1": statistics.mean(h1 for _, h1 in hits),
                "queries": len(hits),
            }
            for side, hits in sides.items()
        }
    overall = [h for sides in scores.values() for h in sides["hybrid"]]
    out["overall_hybrid_recall_at_5"] = statistics.mean(h5 for h5, _ in overall)
    for cls in ("exact", "paraphrase", "both"):
        line = ", ".join(
            f"{side} {out[cls][side]['recall_at_5']:.2f} ({out[cls][side]['recall_at_1']:.2f})"
            for side in ("vector", "text", "hybrid")
        )
        print(f"  {cls:<10} recall@5 (@1): {line}")
    print(f"  overall hybrid recall@5: {out['overall_hybrid_recall_at_5']:.3f}")
    return out


def load(rows: int, seed: int = 11) -> list[str]:
    """``rows`` paragraphs with clustered vectors; returns the paragraphs."""
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from bench.chunks import paragraphs
    from django_autoembed.worker import connect

    rng = np.random.default_rng(seed)
    pool = [p for p in paragraphs() if 80 <= len(p) <= 1200]
    texts = [pool[i % len(pool)] + f" [{i}]" for i in range(rows)]
    centers = rng.standard_normal((max(10, rows // 500), DIMS)).astype(np.float32)
    vectors = centers[rng.integers(0, len(centers), rows)] + 0.35 * rng.standard_normal(
        (rows, DIMS)
    ).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with connect() as conn:
        register_vector(conn)
        conn.execute(f"drop index if exists {TABLE}_hnsw")
        conn.execute(f"truncate {TABLE}")
        with conn.cursor().copy(
            f"copy {TABLE} (id, category, content, embedding) from stdin"
        ) as copy:
            for i, (text, v) in enumerate(zip(texts, vectors, strict=True)):
                copy.write_row((i + 1, i % 10, text, HalfVector(v)))
        common.purge_queue()
        conn.execute(f"analyze {TABLE}")
    return texts


# Words a user leaves out of a search (and that the english configuration drops anyway),
# with the ones every docstring says.
STOP = set(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could default did do does doing down during
    each false few for from further given had has have having he her here him his how if in
    into is it its just may more most must my no none nor not now object of off on once only
    or other our out over own return returned returns same she should so some such than that
    the their them then there these they this those through to too true under until up use
    used uses using value values very was we were what when where which while who whom why
    will with would you your""".split()
)


def queries_from(texts: list[str], count: int, seed: int = 5) -> list[str]:
    """Two or three neighbouring content words of a random row: what a user types."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        words = [w.strip(".,:;()`'\"").lower() for w in rng.choice(texts).split()]
        words = [w for w in words if w.isalpha() and len(w) > 3 and w not in STOP]
        if len(words) >= 3:
            start = rng.randrange(len(words) - 2)
            out.append(" ".join(words[start : start + rng.choice((2, 3))]))
    return out


def timed(run, queries: list[str]) -> dict:
    latencies = []
    for q in queries:
        started = time.perf_counter()
        run(q)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
    }


def latency(api, rows: int, count: int) -> dict:
    from django.conf import settings

    from bench.benchapp.models import HybridDoc
    from django_autoembed.query import query_cache

    settings.AUTOEMBED = {**settings.AUTOEMBED, "BASE_URL": api.base_url}
    texts = load(rows)
    queries = queries_from(texts, count)
    config = HybridDoc.objects.embedding_config()
    for q in queries:  # the API's part is not the database's: embed each query once first
        query_cache.embed(config, q)
    out: dict = {"rows": rows, "queries": count}
    for indexed in (False, True):
        if indexed:
            started = time.perf_counter()
            common.execute("set maintenance_work_mem = '1GB'")
            common.execute(
                f"create index {TABLE}_hnsw on {TABLE} using hnsw (embedding halfvec_cosine_ops)"
            )
            out["hnsw_build_s"] = time.perf_counter() - started
        label = "hnsw" if indexed else "exact"
        runs = {
            "hybrid": lambda q: list(HybridDoc.objects.hybrid_search(q, k=10)),
            "hybrid_filtered": lambda q: list(
                HybridDoc.objects.filter(category=3).hybrid_search(q, k=10)
            ),
            "semantic": lambda q: list(HybridDoc.objects.semantic_search(q, k=10)),
            "text_only": lambda q: list(HybridDoc.objects.hybrid_search(q, k=10, weights=(0, 1))),
        }
        if not indexed:  # without the HNSW index only the text side is indexed
            runs = {"text_side_exact_vectors": runs["hybrid"]}
        for name, run in runs.items():
            run(queries[0])  # warm
            r = timed(run, queries)
            out[f"{label}_{name}"] = r
            print(f"  {label:>5} {name:<24} p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms")
    from django.contrib.postgres.search import SearchQuery

    column = config.text_search_column  # the stored tsvector its GIN index covers
    assert column is not None
    matched = [
        HybridDoc.objects.filter(
            **{column: SearchQuery(q, config="english", search_type="websearch")}
        ).count()
        for q in queries
    ]
    out["text_matches"] = {
        "median": statistics.median(matched),
        "mean": statistics.mean(matched),
        "max": max(matched),
    }
    print(
        f"  rows a query's words match: median {out['text_matches']['median']:.0f}, mean "
        f"{out['text_matches']['mean']:.0f}, max {out['text_matches']['max']}"
    )
    # The worst case of Postgres' ranking: one word that a sixth of the rows hold (every
    # match is ranked); "function" in a corpus of docstrings.
    worst = timed(lambda q: list(HybridDoc.objects.hybrid_search(q, k=10)), ["function"] * 20)
    out["hnsw_hybrid_one_common_word"] = worst
    print(
        f"  hnsw hybrid, one word in ~16% of rows  p50 {worst['p50_ms']:6.1f} ms  "
        f"p95 {worst['p95_ms']:6.1f} ms"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.queries = 10_000, 50
    api = common.setup()
    print(common.machine())
    results = {"quality": quality()}
    print(f"latency over {args.rows:,} rows, {args.queries} queries:")
    results["latency"] = latency(api, args.rows, args.queries)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "hybrid.json").write_text(json.dumps(results, indent=2))
    api.stop()


if __name__ == "__main__":
    main()
