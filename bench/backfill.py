"""Backfills with the default configuration, timed until the vectors *and* the index are ready.

The table is what ``embed_fields`` gives a user (1,536 dims, the HNSW cosine index). Its rows
arrive in one INSERT, as a bulk import does, and the triggers queue them; ``process_embeddings
--once`` with its defaults runs until it exits, which it does once the index it deferred is
built again. Beside it, in the same run on the same rows and fake API: a plain bulk ``CREATE
INDEX`` of those rows (the floor for the index part), and pgai's vectorizer with its defaults and
its best batch size (pgai builds no index below 100,000 rows).

    python -m bench.backfill [--rows 5000,50000] [--latency 0.2] [--no-pgai] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from . import common, pgai_side

HERE = Path(__file__).resolve().parent
TABLE = "benchapp_indexeddoc"
INDEX_SQL = (
    "create index {name} on benchapp_indexeddoc using hnsw (embedding halfvec_cosine_ops) "
    "with (m = 16, ef_construction = 64)"
)
BUILD_MEMORY = "512MB"  # what INDEX_BUILD_MEMORY gives the worker's build, by default
BUILT = re.compile(r"Built the HNSW index \S+ of \S+ in bulk in ([0-9.]+) s")


def index_name() -> str:
    from django_autoembed.config import registry
    from django_autoembed.indexing import managed_index

    index = managed_index(registry.get("benchapp.IndexedDoc.embedding"))
    assert index is not None
    return index.name


def ensure_index() -> None:
    """The table as migrate left it: the index there, nothing deferred."""
    common.execute("delete from django_autoembed_indexstate")
    if not common.execute("select to_regclass(%s)", [index_name()])[0][0]:
        common.execute(f"set maintenance_work_mem = '{BUILD_MEMORY}'")
        common.execute(INDEX_SQL.format(name=index_name()))


def ours(api, rows: int, latency: float) -> dict:
    api.reset()
    api.latency = latency
    common.execute(f"truncate {TABLE}")
    ensure_index()
    common.load(TABLE, rows)  # one INSERT; the triggers queue every row
    started = time.perf_counter()
    run = common.run_process(common.ours_command("--verbosity=1"), api, timeout=3600)
    total = time.perf_counter() - started
    left = common.missing(TABLE)
    valid = common.execute(
        "select indisvalid from pg_index where indexrelid = to_regclass(%s)", [index_name()]
    )
    if run.returncode or left or not valid or not valid[0][0]:
        raise RuntimeError(
            f"our worker: exit {run.returncode}, {left} rows left, index "
            f"{valid}\n{run.stderr[-2000:]}"
        )
    built = BUILT.search(run.stderr)
    return {
        "rows_s": rows / run.seconds,
        "seconds": run.seconds,
        "with_startup_s": total,
        "index_build_s": float(built.group(1)) if built else None,
        "deferred": bool(built),
        "peak_mb": run.peak_mb,
        "requests": api.requests,
    }


def bulk_create_index() -> float:
    """A plain CREATE INDEX of the rows the worker just embedded (the index is left in place)."""
    common.execute(f"drop index if exists {index_name()}")
    common.execute(f"set maintenance_work_mem = '{BUILD_MEMORY}'")
    started = time.perf_counter()
    common.execute(INDEX_SQL.format(name=index_name()))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="5000,50000")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true", help="2,000 rows, no pgai")
    parser.add_argument("--no-pgai", action="store_true")
    args = parser.parse_args()
    sizes = [2000] if args.quick else [int(n) for n in args.rows.split(",")]
    api = common.setup()
    side = None if args.quick or args.no_pgai else pgai_side.PgaiSide.prepare(api)
    results = {"machine": common.machine(), "latency": args.latency, "runs": []}
    print(
        f"Backfill of the default configuration (HNSW index), API at {args.latency * 1000:.0f} ms"
    )
    for rows in sizes:
        entry: dict = {"rows": rows, "ours": ours(api, rows, args.latency)}
        entry["bulk_create_index_s"] = bulk_create_index()
        if side is not None:
            entry["pgai_default"] = side.run(rows, args.latency, batch_size=None)
            entry["pgai_best"] = side.run(rows, args.latency, batch_size=500)
        results["runs"].append(entry)
        report(entry)
    if side is None and not args.quick:
        print(f"pgai skipped: {pgai_side.skip_reason or 'not asked for'}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "backfill.json").write_text(json.dumps(results, indent=2))


def report(entry: dict) -> None:
    ours_run = entry["ours"]
    build, bulk = ours_run["index_build_s"], entry["bulk_create_index_s"]
    print(f"\n{entry['rows']:,} rows")
    print(
        f"  ours, defaults, vectors + index: {ours_run['seconds']:.1f} s = "
        f"{ours_run['rows_s']:.0f} "
        f"rows/s (deferred: {ours_run['deferred']})"
    )
    if build is not None:
        print(
            f"  index build within the run:     {build:.1f} s; bulk CREATE INDEX of the same rows "
            f"{bulk:.1f} s; ratio {build / bulk:.2f}"
        )
    for key in ("pgai_default", "pgai_best"):
        if key in entry:
            other = entry[key]
            print(
                f"  {key.replace('_', ' ')} (no index): {other['seconds']:.1f} s = "
                f"{other['rows_s']:.0f} rows/s; ours/this "
                f"{ours_run['rows_s'] / other['rows_s']:.2f}x"
            )


if __name__ == "__main__":
    main()
