"""A backfill within the account's limits: share of the limit used, and 429s.

50,000 rows of ~150 tokens (7.5 M tokens) against a fake limited to 1,000,000 tokens per
minute over a sliding minute, as the API enforces it (429 with ``Retry-After`` and the
``x-ratelimit-*`` headers past it, and those headers on every answer). The workers are
given no limit in their settings: they learn it from the headers. Runs with 1 worker
process and with 3, each ``process_embeddings --once`` with its defaults; the baseline, in
the same run, is the same backfill with pacing off (``RATE_LIMIT_HEADERS`` False), which is
what every worker did before. Measured from the fake: tokens let in per minute over the run
(from the first request to the last) against the limit, and the share of requests answered
429. Rows dead-lettered must be 0.

    python -m bench.ratelimit [--rows 50000] [--tpm 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common

HERE = Path(__file__).resolve().parent
TABLE = "benchapp_doc"


def short_text(i: int) -> str:
    """About 150 tokens of different text for every row."""
    return common.text_for(i, length=700)


def load(rows: int) -> None:
    common.execute(f"truncate {TABLE}")
    common.purge_queue()
    common.execute("delete from django_autoembed_ratebudget")
    common.execute("delete from django_autoembed_storedvector")
    common.execute("delete from django_autoembed_embeddingfailure")
    common.execute(
        f"insert into {TABLE} (title, content) select * from unnest(%s::text[], %s::text[])",
        [[f"title {i}" for i in range(rows)], [short_text(i) for i in range(rows)]],
    )


def run(api, rows: int, tpm: int, workers: int, *, paced: bool) -> dict:
    api.reset()
    api.tpm = tpm
    load(rows)
    env = {} if paced else {"AUTOEMBED_BENCH_RATE_HEADERS": "off"}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        procs = []
        for _ in range(workers):
            err = stack.enter_context(tempfile.TemporaryFile("w+"))
            proc = subprocess.Popen(
                common.ours_command("--verbosity=1"),
                cwd=common.ROOT,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
            procs.append((proc, err))
        for proc, err in procs:
            proc.wait(timeout=3600)
            if proc.returncode:
                err.seek(0)
                raise RuntimeError(f"worker exit {proc.returncode}: {err.read()[-2000:]}")
    seconds = time.perf_counter() - started
    left = common.missing(TABLE)
    dead = common.execute("select count(*) from django_autoembed_embeddingfailure")[0][0]
    sent = sorted(api.sent)
    span = sent[-1][0] - sent[0][0] if len(sent) > 1 else 1.0
    tokens = sum(t for _, t in sent)
    total_requests = api.requests
    result = {
        "workers": workers,
        "paced": paced,
        "rows": rows,
        "seconds": seconds,
        "left": left,
        "dead_lettered": dead,
        "tokens": tokens,
        "tokens_per_minute": tokens / span * 60,
        "share_of_limit": tokens / span * 60 / tpm,
        "requests": total_requests,
        "answered_429": api.throttled,
        "share_429": api.throttled / max(1, total_requests),
    }
    print(
        f"{'paced' if paced else 'unpaced'}, {workers} worker process(es): {rows} rows in "
        f"{seconds:.0f} s; {result['tokens_per_minute']:,.0f} tokens/min = "
        f"{result['share_of_limit']:.1%} of the limit; {api.throttled} of {total_requests} "
        f"requests answered 429 ({result['share_429']:.2%}); {left} rows left, {dead} "
        "dead-lettered",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--tpm", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="5,000 rows at 200,000 TPM")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    rows, tpm = (5_000, 200_000) if args.quick else (args.rows, args.tpm)
    api = common.setup()
    print(common.machine())
    print(f"{rows} rows of ~150 tokens, the fake limited to {tpm:,} tokens per minute")
    results = {}
    if not args.no_baseline:
        results["unpaced_3"] = run(api, rows, tpm, 3, paced=False)
    for workers in (1, 3):
        results[f"paced_{workers}"] = run(api, rows, tpm, workers, paced=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "ratelimit.json").write_text(json.dumps(results, indent=2))
    api.stop()


if __name__ == "__main__":
    sys.exit(main())
