"""A backfill through the Batch API, within the account's enqueued-token limit.

The default configuration (``benchapp.IndexedDoc``: 1,536 dims, the HNSW index), rows there
before the declaration, embedded by ``process_embeddings --backfill --once`` two ways in the
same run, on the same rows and fake API:

- the baseline: through the embeddings API, at full price;
- ``--batch-api``: through the fake's Batch API, which applies OpenAI's documented limits:
  enqueued tokens per model (``--limit``; by default a fifth of the backlog's tokens as the
  baseline counted them, tier 1's ratio: 3,000,000 tokens for text-embedding-3-small
  against 100,000 rows of ~150 tokens), 50,000 inputs a batch, output lines in any order,
  ``--line-failures`` of the request lines failed (in the error file), and a batch that
  takes ``--batch-latency`` seconds (the 24-hour window, scaled down).

It reports the batches made, the share of inputs embedded at the batch price, the price of
each way (and their ratio), the wall time against the fake's batch latency, and the
worker's peak memory.

    python -m bench.batchapi [--rows 100000] [--limit 3000000] [--batch-latency 20]
                             [--line-failures 0.01] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from . import common

HERE = Path(__file__).resolve().parent
MODEL = "IndexedDoc"
LABEL = f"benchapp.{MODEL}.embedding"
TABLE = f"benchapp_{MODEL.lower()}"
# Characters of text a row: ~150 tokens with its title.
TEXT_LENGTH = 1000
BUILT = re.compile(r"Built the HNSW index \S+ of \S+ in bulk in ([0-9.]+) s")


def prices() -> tuple[float, float]:
    from django_autoembed import settings

    per_million = settings.current().prices["text-embedding-3-small"]
    return per_million / 1e6, per_million / 1e6 * settings.current().batch_price


def run(api, rows: int, *, batch: bool, args: argparse.Namespace) -> dict:
    api.reset()
    # Billed tokens counted exactly both ways, as the Batch API counts them: the prices and
    # the limit's ratio to the backlog compare like with like.
    api.exact_tokens = True
    api.latency = args.latency
    api.batch_delay = args.batch_latency
    api.batch_queue_limit = args.limit if batch else None
    api.batch_line_failure_rate = args.line_failures if batch else 0.0
    common.load(TABLE, rows, length=TEXT_LENGTH)
    common.purge_queue()  # rows from before the declaration: nothing queued
    common.execute("delete from django_autoembed_providerbatch")
    common.execute("delete from django_autoembed_incident")
    common.execute("delete from django_autoembed_embeddingusage")
    command = common.ours_command("--backfill", f"--config={LABEL}", "--verbosity=1")
    if batch:
        command.append("--batch-api")
    env = {
        "AUTOEMBED_BENCH_BATCH_POLL": str(args.poll),
        "AUTOEMBED_BENCH_QUEUE_TOKENS": str(args.limit or 3_000_000),
    }
    started = time.perf_counter()
    done = common.run_process(command, api, env=env, timeout=3600)
    wall = time.perf_counter() - started
    left = common.missing(TABLE)
    if done.returncode or left:
        raise RuntimeError(f"exit {done.returncode}, {left} rows left\n{done.stderr[-3000:]}")
    usage = dict(
        common.execute(
            "select mode, sum(tokens) from django_autoembed_embeddingusage group by mode"
        )
    )
    batches = common.execute(
        "select count(*), coalesce(sum(vectors), 0), count(*) filter (where queue_limit "
        "is not null), coalesce(max(enqueued), 0) from django_autoembed_providerbatch"
    )[0]
    api_price, batch_price = prices()
    at_api, at_batch = int(usage.get("api", 0)), int(usage.get("batch", 0))
    return {
        "batch_api": batch,
        "rows": rows,
        "wall_s": wall,
        "peak_mb": done.peak_mb,
        "cpu_s": done.cpu_seconds,
        "batches": int(batches[0]),
        "batch_vectors": int(batches[1]),
        "refused_for_limit": int(batches[2]),
        "largest_batch_tokens": int(batches[3]),
        "fake_refusals": api.batch_limit_refusals,
        "api_inputs": api.inputs,
        "tokens_api": at_api,
        "tokens_batch": at_batch,
        "dollars": at_api * api_price + at_batch * batch_price,
        "index_builds": [float(s) for s in BUILT.findall(done.stderr)],
        "log_tail": done.stderr[-4000:],
        "index_log": [line for line in done.stderr.splitlines() if "HNSW" in line],
    }


def report(base: dict, batch: dict, args: argparse.Namespace) -> None:
    rows = batch["rows"]
    share = batch["batch_vectors"] / rows
    backlog = base["tokens_api"]
    print(f"\n{rows:,} rows, {backlog:,} tokens (~{backlog / rows:.0f} a row)")
    print(
        f"  enqueued-token limit {args.limit:,} = 1/{backlog / args.limit:.1f} of the backlog; "
        f"batch latency {args.batch_latency:g} s; {args.line_failures:.0%} of lines fail"
    )
    print(
        f"  embeddings API (baseline): {base['wall_s']:.1f} s, ${base['dollars']:.4f}, "
        f"peak {base['peak_mb']:.0f} MB"
    )
    print(
        f"  Batch API: {batch['wall_s']:.1f} s = {batch['wall_s'] / args.batch_latency:.1f}x "
        f"the batch latency, ${batch['dollars']:.4f}, peak {batch['peak_mb']:.0f} MB"
    )
    print(
        f"  batches: {batch['batches']} (largest {batch['largest_batch_tokens']:,} tokens), "
        f"refused for the limit: {batch['refused_for_limit']} (the fake refused "
        f"{batch['fake_refusals']})"
    )
    print(
        f"  inputs at the batch price: {share:.2%}; {batch['api_inputs']:,} through the "
        f"embeddings API"
    )
    print(f"  price, Batch API / embeddings API: {batch['dollars'] / base['dollars']:.3f}")
    for run in (base, batch):
        builds = run["index_builds"]
        print(
            f"  {'Batch API' if run['batch_api'] else 'embeddings API'}: {len(builds)} bulk "
            f"index builds, {sum(builds):.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--limit", type=int, help="enqueued tokens (default: backlog / 5)")
    parser.add_argument("--batch-latency", type=float, default=20.0)
    parser.add_argument("--line-failures", type=float, default=0.01)
    parser.add_argument("--latency", type=float, default=0.2, help="embeddings API latency")
    parser.add_argument("--poll", type=float, default=2.0, help="BATCH_POLL_SECONDS")
    parser.add_argument("--quick", action="store_true", help="5,000 rows, 3 s batches")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.batch_latency = 5000, 3.0
    api = common.setup()
    print(f"Backfill through the Batch API ({common.machine()})")
    base = run(api, args.rows, batch=False, args=args)
    args.limit = args.limit or base["tokens_api"] // 5
    batch = run(api, args.rows, batch=True, args=args)
    report(base, batch, args)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    results = {"machine": common.machine(), "args": vars(args), "api": base, "batch": batch}
    (out / "batchapi.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
