"""Insert → vector latency for single-row inserts with an idle worker (woken by NOTIFY).

python -m bench.latency [--inserts 50] [--quick]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import common

HERE = Path(__file__).resolve().parent


def measure(api, inserts: int) -> dict:
    from django_autoembed.worker import connect

    api.reset()
    common.load("benchapp_doc", 0)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "process_embeddings",
            "--verbosity=0",
            "--settings=bench.settings",
            "--poll-interval=60",
        ],
        cwd=common.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[float] = []
    try:
        with connect() as conn:
            time.sleep(3)  # started, drained, listening
            for i in range(inserts):
                start = time.perf_counter()
                pk = conn.execute(
                    "insert into benchapp_doc (title, content) values (%s, %s) returning id",
                    [f"single {i}", common.text_for(i)],
                ).fetchone()[0]
                while conn.execute(
                    "select embedding is null from benchapp_doc where id = %s", [pk]
                ).fetchone()[0]:
                    if time.perf_counter() - start > 30:
                        raise RuntimeError("no vector after 30 s: is the worker running?")
                    time.sleep(0.002)
                samples.append(time.perf_counter() - start)
                time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    samples.sort()
    return {
        "inserts": inserts,
        "p50_ms": statistics.median(samples) * 1000,
        "p95_ms": samples[int(0.95 * (len(samples) - 1))] * 1000,
        "max_ms": samples[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inserts", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "latency.json"))
    args = parser.parse_args()
    api = common.setup()
    result = measure(api, 10 if args.quick else args.inserts)
    print(
        f"insert -> vector, idle worker: p50 {result['p50_ms']:.0f} ms, p95 "
        f"{result['p95_ms']:.0f} ms "
        f"(target p50 < 1000 ms; the guide's cron polls every 10 s)"
    )
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": common.machine(), **result}, indent=2))


if __name__ == "__main__":
    main()
