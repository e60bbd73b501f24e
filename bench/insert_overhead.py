"""Insert overhead of the triggers: one 20,000-row bulk_create with and without them.

Prints the median of 5 alternating runs and the ratio against the plain table,
measured in the same run on the same database.
    python bench/insert_overhead.py [--rows N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

TEXT = ("Postgres keeps embeddings next to the rows they describe; " * 12)[:670]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("drop table if exists bench_plain")
        cursor.execute("create table bench_plain (like testapp_document including all)")
    rows = [(f"title {i}", TEXT, 0) for i in range(args.rows)]
    times: dict[str, list[float]] = {"plain": [], "autoembed": []}

    def insert(table: str) -> float:
        with connection.cursor() as cursor:
            cursor.execute(f"truncate {table} cascade")
            cursor.execute("select pgmq.purge_queue('embedding_jobs')")
            start = time.perf_counter()
            cursor.execute(
                f"insert into {table} (title, content, views) select * from unnest(%s::text[], "
                "%s::text[], %s::int[])",
                [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
            )
            return time.perf_counter() - start

    for run in range(args.runs):
        order = [("plain", "bench_plain"), ("autoembed", "testapp_document")]
        for name, table in order if run % 2 == 0 else reversed(order):
            times[name].append(insert(table))
    with connection.cursor() as cursor:
        cursor.execute(
            "select count(*), sum(coalesce(jsonb_array_length(message->'ids'), 1)) from "
            "pgmq.q_embedding_jobs"
        )
        messages, queued = cursor.fetchone()
        cursor.execute("truncate testapp_document cascade; drop table bench_plain")
        cursor.execute("select pgmq.purge_queue('embedding_jobs')")
    plain_s, ours_s = statistics.median(times["plain"]), statistics.median(times["autoembed"])
    print(f"rows per statement: {args.rows}, runs: {args.runs} (alternating)")
    print(f"plain table:        {plain_s * 1000:8.1f} ms (median)")
    print(
        f"with our triggers:  {ours_s * 1000:8.1f} ms (median), queued {queued} rows in "
        f"{messages} messages"
    )
    print(
        f"ratio:              {ours_s / plain_s:.2f}x  (target <= 1.3x; pgai's row trigger "
        "2.1-2.5x)"
    )


if __name__ == "__main__":
    main()
