"""Backfills with the default configuration, timed until the vectors *and* the index are ready.

The table is what ``embed_fields`` gives a user (1,536 dims, the HNSW cosine index), under two
labels: ``benchapp.IndexedDoc`` and ``benchapp.IndexedNote``, whose advisory-lock keys fell on
either side of 2**31 before issue 34 (the second never deferred its index). Rows come two ways:

- ``insert``: one INSERT, as a bulk import does; the triggers queue them, and
  ``process_embeddings --once`` runs until it exits;
- ``existing``: rows that were there before the declaration (nothing queued), embedded by
  ``process_embeddings --backfill --once --config LABEL``, as a new user does.

The worker exits once the index it deferred is built again. Beside it, in the same run on the
same rows and fake API: a plain bulk ``CREATE INDEX`` of those rows (the floor for the index
part), and pgai's vectorizer with its defaults and its best batch size on the same rows, there
before the vectorizer (pgai builds no index below 100,000 rows).

    python -m bench.backfill [--rows 5000,50000] [--latency 0.2] [--source existing,insert]
                             [--models IndexedDoc,IndexedNote] [--no-pgai] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from . import common, pgai_side

HERE = Path(__file__).resolve().parent
INDEX_SQL = (
    "create index {name} on {table} using hnsw (embedding halfvec_cosine_ops) "
    "with (m = 16, ef_construction = 64)"
)
BUILD_MEMORY = "512MB"  # what INDEX_BUILD_MEMORY gives the worker's build, by default
BUILT = re.compile(r"Built the HNSW index \S+ of \S+ in bulk in ([0-9.]+) s")


def label(model: str) -> str:
    return f"benchapp.{model}.embedding"


def table(model: str) -> str:
    return f"benchapp_{model.lower()}"


def index_name(model: str) -> str:
    from django_autoembed.declarations import registry
    from django_autoembed.hnsw.indexes import managed_index

    index = managed_index(registry.get(label(model)))
    assert index is not None
    return index.name


def ensure_index(model: str) -> None:
    """The table as migrate left it: the index there, nothing deferred."""
    common.execute("delete from django_autoembed_indexstate")
    if not common.execute("select to_regclass(%s)", [index_name(model)])[0][0]:
        common.execute(f"set maintenance_work_mem = '{BUILD_MEMORY}'")
        common.execute(INDEX_SQL.format(name=index_name(model), table=table(model)))


def ours(api, rows: int, latency: float, model: str, source: str) -> dict:
    api.reset()
    api.latency = latency
    common.execute(f"truncate {table(model)}")
    ensure_index(model)
    common.load(table(model), rows)  # one INSERT; the triggers queue every row
    args = ["--verbosity=1"]
    if source == "existing":  # rows from before the declaration: nothing queued
        common.purge_queue()
        args += ["--backfill", f"--config={label(model)}"]
    started = time.perf_counter()
    run = common.run_process(common.ours_command(*args), api, timeout=3600)
    total = time.perf_counter() - started
    left = common.missing(table(model))
    valid = common.execute(
        "select indisvalid from pg_index where indexrelid = to_regclass(%s)", [index_name(model)]
    )
    incidents = common.execute("select count(*) from django_autoembed_incident")[0][0]
    if run.returncode or left or not valid or not valid[0][0] or incidents:
        raise RuntimeError(
            f"our worker: exit {run.returncode}, {left} rows left, index {valid}, "
            f"{incidents} incidents\n{run.stderr[-2000:]}"
        )
    built = BUILT.search(run.stderr)
    return {
        "model": model,
        "source": source,
        "rows_s": rows / run.seconds,
        "seconds": run.seconds,
        "with_startup_s": total,
        "index_build_s": float(built.group(1)) if built else None,
        "deferred": bool(built),
        "peak_mb": run.peak_mb,
        "requests": api.requests,
    }


def bulk_create_index(model: str) -> float:
    """A plain CREATE INDEX of the rows the worker just embedded (the index is left in place)."""
    common.execute(f"drop index if exists {index_name(model)}")
    common.execute(f"set maintenance_work_mem = '{BUILD_MEMORY}'")
    started = time.perf_counter()
    common.execute(INDEX_SQL.format(name=index_name(model), table=table(model)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="5000,50000")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--source", default="existing,insert")
    parser.add_argument("--models", default="IndexedDoc,IndexedNote")
    parser.add_argument("--quick", action="store_true", help="2,000 rows, no pgai")
    parser.add_argument("--no-pgai", action="store_true")
    args = parser.parse_args()
    sizes = [2000] if args.quick else [int(n) for n in args.rows.split(",")]
    sources = args.source.split(",")
    models = args.models.split(",")
    api = common.setup()
    side = None if args.quick or args.no_pgai else pgai_side.PgaiSide.prepare(api)
    results = {"machine": common.machine(), "latency": args.latency, "runs": []}
    print(
        f"Backfill of the default configuration (HNSW index), API at {args.latency * 1000:.0f} ms"
    )
    for rows in sizes:
        entry: dict = {"rows": rows, "ours": []}
        if side is not None:  # pgai first: its rows are there before its vectorizer
            entry["pgai_default"] = side.run(rows, args.latency, batch_size=None)
            entry["pgai_best"] = side.run(rows, args.latency, batch_size=500)
        for source in sources:
            for model in models:
                run = ours(api, rows, args.latency, model, source)
                run["bulk_create_index_s"] = bulk_create_index(model)
                entry["ours"].append(run)
        results["runs"].append(entry)
        report(entry)
    if side is None and not args.quick:
        print(f"pgai skipped: {pgai_side.skip_reason or 'not asked for'}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "backfill.json").write_text(json.dumps(results, indent=2))


def report(entry: dict) -> None:
    print(f"\n{entry['rows']:,} rows")
    best = entry.get("pgai_best")
    for key in ("pgai_default", "pgai_best"):
        if key in entry:
            other = entry[key]
            print(
                f"  {key.replace('_', ' ')} (no index): {other['seconds']:.1f} s = "
                f"{other['rows_s']:.0f} rows/s"
            )
    for run in entry["ours"]:
        build, bulk = run["index_build_s"], run["bulk_create_index_s"]
        line = (
            f"  ours, {run['source']} rows, {run['model']}: {run['seconds']:.1f} s = "
            f"{run['rows_s']:.0f} rows/s (deferred: {run['deferred']}"
        )
        if build is not None:
            line += f", index build {build:.1f} s against a bulk build of {bulk:.1f} s"
        line += ")"
        if best is not None:
            line += f"; ours/pgai best {run['rows_s'] / best['rows_s']:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
