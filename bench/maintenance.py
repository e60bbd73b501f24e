"""The HNSW index over time: lanes writing into it at once, and re-embedding the whole table.

Lanes (issue 20.4): the index kept up row by row (``INDEX_DEFER_ROWS`` off), the same rows
embedded by ``process_embeddings --once`` with 1, 2 and 4 lanes (``--concurrency``); each
lane writes on its own connection, so graph inserts proceed side by side. Beside it, a bulk
``CREATE INDEX`` of the same rows with 0 and 1 parallel maintenance workers.

Re-embedding (issue 20.5): the table embedded once, then its text changed and re-embedded
three times, with the defaults (a full re-embedding is a backlog as large as the index, so
the index is dropped and built again) and with the index kept up row by row (each new
vector leaves the old one dead in the graph until VACUUM). Autovacuum is off on the table
for the run, to show what the dead tuples cost before a VACUUM cleans them; search p50,
recall@10 against exact search, index size, the VACUUM's own time, and then what a
``REINDEX INDEX CONCURRENTLY`` costs and gives.

    python -m bench.maintenance [--rows 5000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from . import common
from .backfill import BUILD_MEMORY, INDEX_SQL, ensure_index, index_name

HERE = Path(__file__).resolve().parent
TABLE = "benchapp_indexeddoc"
ROW_BY_ROW = {"AUTOEMBED_BENCH_DEFER_ROWS": "none"}


def embed(api, env: dict[str, str] | None = None, *args: str) -> common.Run:
    latency = api.latency
    api.reset()
    api.latency = latency
    run = common.run_process(
        common.ours_command("--verbosity=1", *args), api, env=env, timeout=3600
    )
    left = common.missing(TABLE)
    queued = common.execute("select count(*) from pgmq.q_embedding_jobs")[0][0]
    if run.returncode or left or queued:
        raise RuntimeError(f"worker: exit {run.returncode}, {left} rows left\n{run.stderr[-2000:]}")
    return run


def lanes(api, rows: int) -> dict:
    out: dict = {"rows": rows, "worker": {}, "bulk_build": {}}
    for concurrency in (1, 2, 4):
        common.execute(f"truncate {TABLE}")
        ensure_index()
        common.load(TABLE, rows)
        run = embed(api, ROW_BY_ROW, f"--concurrency={concurrency}")
        out["worker"][concurrency] = {"seconds": run.seconds, "rows_s": rows / run.seconds}
        print(f"  index kept up row by row, {concurrency} lane(s): {rows / run.seconds:.0f} rows/s")
    for workers in (0, 1):
        common.execute(f"drop index if exists {index_name()}")
        common.execute(f"set maintenance_work_mem = '{BUILD_MEMORY}'")
        common.execute(f"set max_parallel_maintenance_workers = {workers}")
        started = time.perf_counter()
        common.execute(INDEX_SQL.format(name=index_name()))
        out["bulk_build"][workers] = time.perf_counter() - started
        print(
            f"  bulk CREATE INDEX, {workers} parallel worker(s): {out['bulk_build'][workers]:.1f} s"
        )
    common.execute("reset max_parallel_maintenance_workers")
    return out


def searched(queries: int = 100) -> dict:
    """p50 and recall@10 of nearest() on the table as it stands, and the index's size."""
    from bench.benchapp.models import IndexedDoc

    ids, vectors = [], []
    for pk, vector in IndexedDoc.objects.values_list("pk", "embedding").iterator(chunk_size=2000):
        ids.append(pk)
        vectors.append(np.asarray(vector, dtype=np.float32))
    matrix = np.stack(vectors)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    rng = np.random.default_rng(5)
    latencies, recalls = [], []
    for pick in rng.integers(0, len(ids), queries):
        query = matrix[pick] + 0.2 * rng.standard_normal(matrix.shape[1]).astype(
            np.float32
        ) / np.sqrt(matrix.shape[1])
        exact = {ids[i] for i in np.argsort(-(matrix @ (query / np.linalg.norm(query))))[:10]}
        started = time.perf_counter()
        found = list(IndexedDoc.objects.nearest(query).values_list("pk", flat=True)[:10])
        latencies.append(time.perf_counter() - started)
        recalls.append(len(exact & set(found)) / 10)
    size = common.execute("select pg_relation_size(to_regclass(%s))", [index_name()])[0][0]
    dead = common.execute("select n_dead_tup from pg_stat_user_tables where relname = %s", [TABLE])[
        0
    ][0]
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "recall_at_10": statistics.mean(recalls),
        "index_mb": size / 2**20,
        "dead_tuples": dead,
    }


def reembed(api, rows: int) -> dict:
    out: dict = {"rows": rows}
    for mode, env in (("defaults", None), ("row_by_row", ROW_BY_ROW)):
        common.execute(f"truncate {TABLE}")
        common.execute(f"alter table {TABLE} set (autovacuum_enabled = false)")
        ensure_index()
        common.load(TABLE, rows)
        embed(api, env)
        common.execute(f"vacuum analyze {TABLE}")
        steps = {"embedded": searched()}
        times = []
        for round_ in range(1, 4):
            common.execute(f"update {TABLE} set content = content || ' (v{round_})'")
            times.append(embed(api, env).seconds)
        steps["after_3_reembeddings"] = searched()
        started = time.perf_counter()
        common.execute(f"vacuum {TABLE}")
        vacuum_s = time.perf_counter() - started
        steps["after_vacuum"] = searched()
        # The other cure for a bloated graph: build it again beside the old one.
        common.execute(f"set maintenance_work_mem = '{BUILD_MEMORY}'")
        started = time.perf_counter()
        common.execute(f"reindex index concurrently {index_name()}")
        reindex_s = time.perf_counter() - started
        steps["after_reindex"] = searched()
        common.execute(f"alter table {TABLE} reset (autovacuum_enabled)")
        out[mode] = {
            "steps": steps,
            "reembed_s": times,
            "vacuum_s": vacuum_s,
            "reindex_s": reindex_s,
        }
        for name, step in steps.items():
            print(
                f"  {mode}, {name.replace('_', ' ')}: p50 {step['p50_ms']:.1f} ms, recall@10 "
                f"{step['recall_at_10']:.3f}, index {step['index_mb']:.0f} MB, "
                f"{step['dead_tuples']} dead tuples"
            )
        print(
            f"  {mode}: re-embeddings {', '.join(f'{t:.1f}' for t in times)} s; VACUUM "
            f"{vacuum_s:.1f} s; REINDEX CONCURRENTLY {reindex_s:.1f} s"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--quick", action="store_true", help="1,000 rows")
    parser.add_argument("--part", choices=("lanes", "reembed"), help="run one part only")
    args = parser.parse_args()
    rows = 1000 if args.quick else args.rows
    api = common.setup()
    api.latency = args.latency
    out = HERE / "results" / "maintenance.json"
    results: dict = json.loads(out.read_text()) if args.part and out.exists() else {}
    results.update({"machine": common.machine(), "latency": args.latency})
    if args.part != "reembed":
        print(
            f"Lanes writing into the HNSW index ({rows:,} rows, 1,536 dims, API at "
            f"{args.latency * 1000:.0f} ms)"
        )
        results["lanes"] = lanes(api, rows)
    if args.part != "lanes":
        print(f"Three full re-embeddings of {rows:,} rows")
        results["reembed"] = reembed(api, rows)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
