"""Search: latency and recall@10 of ``nearest``/``semantic_search`` over the HNSW index.

Loads 100,000 rows of 384-d halfvec (clustered, like real embeddings), builds
the index after the load, and compares the top 10 from the index with an exact
search computed in the same run (numpy over the same half-precision vectors).

    python -m bench.search [--rows 100000] [--queries 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from . import common

HERE = Path(__file__).resolve().parent
DIMS = 384
TABLE = "benchapp_searchdoc"


def make_vectors(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(10, n // 500), DIMS)).astype(np.float32)
    v = centers[rng.integers(0, len(centers), n)] + 0.35 * rng.standard_normal((n, DIMS)).astype(
        np.float32
    )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float16).astype(np.float32)  # what halfvec stores


def load(vectors: np.ndarray) -> float:
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from django_autoembed.worker import connect

    with connect() as conn:
        register_vector(conn)
        conn.execute(f"drop index if exists {TABLE}_hnsw")
        conn.execute(f"truncate {TABLE}")
        with conn.cursor().copy(
            f"copy {TABLE} (id, category, content, embedding) from stdin"
        ) as copy:
            for i, v in enumerate(vectors):
                copy.write_row((i + 1, i % 10, f"row {i}", HalfVector(v)))
        common.purge_queue()  # the insert trigger queued them; these rows bring their own vectors
        conn.execute("set maintenance_work_mem = '1GB'")
        start = time.perf_counter()
        # The index the mixin declares (HNSW, halfvec_cosine_ops, pgvector's defaults), built after
        # the load.
        conn.execute(
            f"create index {TABLE}_hnsw on {TABLE} using hnsw (embedding halfvec_cosine_ops)"
        )
        conn.execute(f"analyze {TABLE}")
        return time.perf_counter() - start


def exact_top10(vectors: np.ndarray, query: np.ndarray, mask: np.ndarray | None = None) -> set[int]:
    q = query / np.linalg.norm(query)
    scores = vectors @ q
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    top = np.argpartition(-scores, 10)[:10]
    return {int(i) + 1 for i in top}


def measure(
    vectors: np.ndarray, queries: np.ndarray, ef_search: int | None, category: int | None = None
) -> dict:
    from bench.benchapp.models import SearchDoc

    latencies, recalls = [], []
    mask = None if category is None else (np.arange(len(vectors)) % 10 == category)
    for q in queries:
        qs = SearchDoc.objects.all()
        if category is not None:
            qs = qs.filter(category=category)
        start = time.perf_counter()
        found = list(qs.nearest(q, ef_search=ef_search).values_list("pk", flat=True)[:10])
        latencies.append(time.perf_counter() - start)
        recalls.append(len(set(found) & exact_top10(vectors, q, mask)) / 10)
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "recall_at_10": statistics.mean(recalls),
        "queries": len(queries),
        "ef_search": ef_search or 40,
        "filter": "category = c (1 row in 10)" if category is not None else None,
    }


def explain(query: np.ndarray) -> str:
    from django.db import connection, transaction

    from bench.benchapp.models import SearchDoc

    qs = SearchDoc.objects.nearest(query)[:10]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("select set_config('hnsw.iterative_scan', 'strict_order', true)")
        return qs.explain()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "search.json"))
    args = parser.parse_args()
    if args.quick:
        args.rows, args.queries = 10_000, 50
    api = common.setup()
    vectors = make_vectors(args.rows)
    rng = np.random.default_rng(99)
    picks = rng.integers(0, args.rows, args.queries)
    queries = vectors[picks] + 0.2 * rng.standard_normal((args.queries, DIMS)).astype(
        np.float32
    ) / np.sqrt(DIMS)
    build_s = load(vectors)
    plan = explain(queries[0])
    assert "hnsw" in plan, plan
    results = {
        "machine": common.machine(),
        "rows": args.rows,
        "dims": DIMS,
        "index_build_s": build_s,
        "plan": plan,
        "runs": [],
    }
    for ef, category in ((None, None), (100, None), (None, 3), (100, 3)):
        r = measure(vectors, queries, ef, category)
        results["runs"].append(r)
        label = f"ef_search {r['ef_search']}" + (
            f", filtered {r['filter']}" if category is not None else ""
        )
        print(
            f"  {label:<45} p50 {r['p50_ms']:5.1f} ms  p95 {r['p95_ms']:5.1f} ms  recall@10 "
            f"{r['recall_at_10']:.3f}",
            flush=True,
        )
    # semantic_search end to end: one API call for the query text, then cached
    from django.conf import settings

    from bench.benchapp.models import SearchDoc

    settings.AUTOEMBED = {**settings.AUTOEMBED, "BASE_URL": api.base_url}
    timings = []
    for i in range(20):
        start = time.perf_counter()
        list(
            SearchDoc.objects.semantic_search(f"query {i % 5}", config="embedding").values_list(
                "pk", flat=True
            )[:10]
        )
        timings.append(time.perf_counter() - start)
    results["semantic_search"] = {
        "p50_ms": statistics.median(timings) * 1000,
        "api_requests": api.requests,
        "searches": len(timings),
    }
    print(
        "  semantic_search (5 distinct texts, 20 searches): p50 "
        f"{results['semantic_search']['p50_ms']:.1f} ms, "
        f"{api.requests} API requests"
    )
    print(f"  index build after load: {build_s:.1f} s for {args.rows} rows")
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
