"""Run every benchmark in one go and draw the throughput chart.

    python -m bench.run [--quick] [--no-pgai]

Each part prints its own ratios; JSON lands in bench/results/, the chart in
bench/throughput.png. Copy the figures you keep into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def part(module: str, *args: str) -> None:
    print(f"\n== {module} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of every part"
    )
    parser.add_argument("--no-pgai", action="store_true", help="leave out the pgai side by side")
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    no_pgai = ["--no-pgai"] if args.no_pgai else []
    part("bench.insert_overhead", *(["--rows", "2000", "--runs", "3"] if args.quick else []))
    part("bench.throughput", *quick, *no_pgai)
    part("bench.backfill", *quick, *no_pgai)
    part("bench.chunks", *quick, *no_pgai)
    part("bench.maintenance", *quick)
    part("bench.ratelimit", *quick)
    part("bench.batchapi", *quick)
    part(
        "bench.model_change",
        *(["--rows", "5000", "--before", "10", "--after", "10"] if args.quick else []),
    )
    part("bench.latency", *quick)
    part("bench.search", *quick)
    part("bench.hybrid", *quick)
    part("bench.push", *quick)  # builds the Postgres 17 + pg_cron + pg_net tier on first use
    part("bench.chart")


if __name__ == "__main__":
    main()
