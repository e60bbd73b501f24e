"""The guide's push path at full speed: pg_cron -> pg_net -> the endpoint behind gunicorn.

Runs on the Postgres 17 + pg_cron + pg_net tier the push tests use (tests/pgcron), with
the endpoint served as users deploy it (gunicorn, several workers), the fake API at
200 ms and no worker process. The table is what ``embed_fields`` gives a user (1,536
dims, the HNSW index). Measured in the same run:

- the push path with its defaults (a tick every second, 500-row POSTs, 4 a tick), on
  10,000 rows inserted in 20 statements: rows/s until every vector is written, and
  sustained (10 % to 90 %);
- the pull worker (``process_embeddings``, defaults) on the same rows;
- the guide's defaults (a tick every 10 s, one job per row, 10 jobs a POST, 10 POSTs);
- insert -> vector latency for single rows with the 1-second schedule;
- faults: the endpoint down for 30 s, answering 500 for 30 s, slower than pg_net's
  timeout for 30 s; then every row must be embedded and none dead-lettered;
- how many answers pg_net keeps (net._http_response) with PUSH_KEEP_RESPONSES.

    python -m bench.push [--rows 10000] [--statements 20] [--workers 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DBNAME = "autoembed_push_bench"
TOKEN = "bench-push-token"


def _start_server() -> dict:
    from tests.pgcron import server

    params = server.start(DBNAME)
    url = f"postgres://postgres@{params['HOST']}:{params['PORT']}/{DBNAME}"
    os.environ["DATABASE_URL"] = url
    os.environ["AUTOEMBED_BENCH_TOKEN"] = TOKEN
    return params


PARAMS = _start_server()  # before Django is set up: its database is the bench's

from django.conf import settings  # noqa: E402

from . import common  # noqa: E402

HERE = Path(__file__).resolve().parent
TABLE = "benchapp_indexeddoc"
GUIDE = {
    "SCHEDULE": "10 seconds",
    "PUSH_ROWS_PER_POST": 10,
    "PUSH_MAX_POSTS": 10,
    "PUSH_SPLIT_PACKED": True,
    "PUSH_TIMEOUT": 300.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """The endpoint as users deploy it: gunicorn with several sync workers."""

    def __init__(self, api, workers: int) -> None:
        self.api = api
        self.workers = workers
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/autoembed/embed/"

    def start(self, time_budget: float = 25.0) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "AUTOEMBED_BENCH_BASE_URL": self.api.base_url,
            "AUTOEMBED_BENCH_TOKEN": TOKEN,
            "AUTOEMBED_BENCH_TIME_BUDGET": str(time_budget),
        }
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.proc = subprocess.Popen(
            [
                str(gunicorn),
                "bench.wsgi:application",
                "--workers",
                str(self.workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "120",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None


def configure(**values) -> None:
    """AUTOEMBED as given, written into the database (the cron job's schedule and command)."""
    from django_autoembed.sync import sync

    settings.AUTOEMBED = {**settings.AUTOEMBED, **values}
    sync()


def reset_table() -> None:
    from bench.backfill import ensure_index

    common.execute(f"truncate {TABLE}")
    common.purge_queue()
    common.execute("delete from net._http_response")
    common.execute("delete from autoembed.push_requests")
    common.execute("delete from django_autoembed_embeddingfailure")
    ensure_index()


def insert(rows: int, statements: int, prefix: str = "row") -> None:
    per = rows // statements
    for s in range(statements):
        titles = [f"{prefix} {s}-{i}" for i in range(per)]
        texts = [common.text_for(s * per + i) for i in range(per)]
        common.execute(
            f"insert into {TABLE} (title, content) select * from unnest(%s::text[], %s::text[])",
            [titles, texts],
        )


def embedded() -> int:
    return common.execute(f"select count(embedding) from {TABLE}")[0][0]


def follow(rows: int, timeout: float, started: float) -> dict:
    """Poll until every row has a vector; (seconds, rows/s overall and sustained)."""
    samples: list[tuple[float, int]] = []
    peak_responses = 0
    deadline = time.monotonic() + timeout
    while True:
        done = embedded()
        samples.append((time.perf_counter() - started, done))
        peak_responses = max(
            peak_responses, common.execute("select count(*) from net._http_response")[0][0]
        )
        if done >= rows or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    seconds, done = samples[-1]
    t10 = next(t for t, n in samples if n >= rows * 0.1) if done >= rows * 0.1 else None
    t90 = next(t for t, n in samples if n >= rows * 0.9) if done >= rows * 0.9 else None
    sustained = rows * 0.8 / (t90 - t10) if t10 is not None and t90 and t90 > t10 else None
    return {
        "rows": rows,
        "embedded": done,
        "seconds": seconds,
        "rows_s": done / seconds,
        "sustained_rows_s": sustained,
        "peak_http_responses": peak_responses,
    }


def index_ready(timeout: float = 600) -> float:
    from bench.backfill import index_name

    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = common.execute("select count(*) from django_autoembed_indexstate")[0][0]
        valid = common.execute(
            "select indisvalid from pg_index where indexrelid = to_regclass(%s)", [index_name()]
        )
        if not state and valid and valid[0][0]:
            return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError("the index was not built again")


def push_run(api, endpoint: Gunicorn, rows: int, statements: int, latency: float) -> dict:
    reset_table()
    configure(ENDPOINT_URL=endpoint.url, ENDPOINT_TOKEN=TOKEN, SCHEDULE="1 seconds")
    api.reset()
    api.latency = latency
    started = time.perf_counter()
    insert(rows, statements)
    result = follow(rows, timeout=600, started=started)
    result["index_ready_after_s"] = index_ready()
    result["failures"] = failures()
    result["requests"] = api.requests
    return result


def pull_run(api, rows: int, statements: int, latency: float) -> dict:
    reset_table()
    configure(SCHEDULE=None)
    api.reset()
    api.latency = latency
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "process_embeddings",
            "--verbosity=0",
            "--settings=bench.settings",
            "--poll-interval=1",
        ],
        cwd=ROOT,
        env={**os.environ, "AUTOEMBED_BENCH_BASE_URL": api.base_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # started and listening
        started = time.perf_counter()
        insert(rows, statements)
        result = follow(rows, timeout=600, started=started)
        result["index_ready_after_s"] = index_ready()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    result["failures"] = failures()
    return result


def guide_run(api, endpoint: Gunicorn, rows: int, latency: float, seconds: float) -> dict:
    reset_table()
    configure(ENDPOINT_URL=endpoint.url, ENDPOINT_TOKEN=TOKEN, **GUIDE)
    api.reset()
    api.latency = latency
    started = time.perf_counter()
    insert(rows, max(1, rows // 500))
    time.sleep(seconds)
    done = embedded()
    configure(
        SCHEDULE=None,
        PUSH_ROWS_PER_POST=500,
        PUSH_MAX_POSTS=4,
        PUSH_SPLIT_PACKED=False,
        PUSH_TIMEOUT=30.0,
    )
    return {
        "seconds": time.perf_counter() - started,
        "embedded": done,
        "rows_s": done / (time.perf_counter() - started),
    }


def latency_run(api, endpoint: Gunicorn, inserts: int, latency: float) -> dict:
    from django_autoembed.worker import connect

    reset_table()
    configure(ENDPOINT_URL=endpoint.url, ENDPOINT_TOKEN=TOKEN, SCHEDULE="1 seconds")
    api.reset()
    api.latency = latency
    samples = []
    with connect() as conn:
        for i in range(inserts):
            start = time.perf_counter()
            pk = conn.execute(
                f"insert into {TABLE} (title, content) values (%s, %s) returning id",
                [f"single {i}", common.text_for(i)],
            ).fetchone()[0]
            while not conn.execute(
                f"select embedding is not null from {TABLE} where id = %s", [pk]
            ).fetchone()[0]:
                time.sleep(0.01)
            samples.append(time.perf_counter() - start)
            time.sleep(0.37)  # spread the inserts over the tick
    samples.sort()
    return {
        "inserts": inserts,
        "p50_s": statistics.median(samples),
        "p95_s": samples[int(len(samples) * 0.95) - 1],
        "max_s": samples[-1],
    }


def failures() -> dict:
    return {
        "dead_lettered": common.execute("select count(*) from django_autoembed_embeddingfailure")[
            0
        ][0],
        "archived": common.execute("select count(*) from pgmq.a_embedding_jobs")[0][0],
    }


def fault_run(
    api, endpoint: Gunicorn, fault: str, rows: int, latency: float, outage: float
) -> dict:
    """Insert rows during a fault that lasts ``outage`` seconds; then everything must land."""
    reset_table()
    good = endpoint.url
    if fault == "slow":  # pg_net waits 5 s; the endpoint's budget is 3 s
        endpoint.stop()
        endpoint.start(time_budget=3.0)
        configure(ENDPOINT_URL=good, ENDPOINT_TOKEN=TOKEN, SCHEDULE="1 seconds", PUSH_TIMEOUT=5.0)
    else:
        configure(ENDPOINT_URL=good, ENDPOINT_TOKEN=TOKEN, SCHEDULE="1 seconds")
    api.reset()
    api.latency = latency
    if fault == "down":
        endpoint.stop()
    elif fault == "500":
        configure(ENDPOINT_URL=good.replace("/autoembed/embed/", "/broken/"))
    elif fault == "slow":
        api.latency = 8.0  # each request outlives pg_net's 5 s wait
    started = time.perf_counter()
    insert(rows, max(1, rows // 500))
    time.sleep(outage)
    posts_during = common.execute("select count(*) from net._http_response")[0][0]
    if fault == "down":
        endpoint.start()
    elif fault == "500":
        configure(ENDPOINT_URL=good)
    elif fault == "slow":
        api.latency = latency
    recovered = time.perf_counter()
    result = follow(rows, timeout=600, started=started)
    result["after_recovery_s"] = time.perf_counter() - recovered
    result["answers_during_fault"] = posts_during
    result["failures"] = failures()
    if fault == "slow":
        configure(PUSH_TIMEOUT=30.0)
        endpoint.stop()
        endpoint.start()
    return result


def responses_run(api, endpoint: Gunicorn, rows: int, latency: float) -> dict:
    """With PUSH_KEEP_RESPONSES short, pg_net's kept answers stay few whatever the volume."""
    reset_table()
    configure(
        ENDPOINT_URL=endpoint.url,
        ENDPOINT_TOKEN=TOKEN,
        SCHEDULE="1 seconds",
        PUSH_ROWS_PER_POST=50,
        PUSH_KEEP_RESPONSES="5 seconds",
    )
    api.reset()
    api.latency = latency
    started = time.perf_counter()
    insert(rows, max(1, rows // 500))
    result = follow(rows, timeout=600, started=started)
    time.sleep(8)  # two more ticks settle and clean up
    result["http_responses_after"] = common.execute("select count(*) from net._http_response")[0][0]
    configure(PUSH_ROWS_PER_POST=500, PUSH_KEEP_RESPONSES="10 minutes")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--statements", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = 2000 if args.quick else args.rows
    api = common.setup()
    endpoint = Gunicorn(api, args.workers)
    endpoint.start()
    results: dict = {"machine": common.machine(), "latency": args.latency, "workers": args.workers}
    try:
        results["push"] = push_run(api, endpoint, rows, args.statements, args.latency)
        report("push path, defaults", results["push"])
        results["pull"] = pull_run(api, rows, args.statements, args.latency)
        report("pull worker, defaults", results["pull"])
        results["guide"] = guide_run(api, endpoint, 2000, args.latency, 30 if args.quick else 60)
        print(
            f"guide's defaults: {results['guide']['rows_s']:.1f} rows/s "
            f"({results['guide']['embedded']} rows in {results['guide']['seconds']:.0f} s)"
        )
        results["latency_1s"] = latency_run(api, endpoint, 10 if args.quick else 30, args.latency)
        print(
            f"insert -> vector with a 1-second schedule: p50 {results['latency_1s']['p50_s']:.2f} "
            "s, "
            f"p95 {results['latency_1s']['p95_s']:.2f} s"
        )
        for fault in ("down", "500", "slow"):
            outage = 10 if args.quick else args.outage
            results[f"fault_{fault}"] = fault_run(api, endpoint, fault, 2000, args.latency, outage)
            r = results[f"fault_{fault}"]
            print(
                f"fault {fault} for {outage:.0f} s: all {r['embedded']}/{r['rows']} rows embedded "
                f"{r['after_recovery_s']:.1f} s after recovery; {r['failures']}"
            )
        results["responses"] = responses_run(
            api, endpoint, 4000 if not args.quick else 1000, args.latency
        )
        print(
            f"pg_net answers kept with PUSH_KEEP_RESPONSES=5 seconds: peak "
            f"{results['responses']['peak_http_responses']}, after "
            f"{results['responses']['http_responses_after']}"
        )
    finally:
        configure(SCHEDULE=None)
        endpoint.stop()
    push, pull = results["push"], results["pull"]
    print(
        f"\npush / pull: {push['rows_s'] / pull['rows_s']:.2f}x; "
        f"push / guide: {push['rows_s'] / results['guide']['rows_s']:.0f}x"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "push.json").write_text(json.dumps(results, indent=2))


def report(name: str, r: dict) -> None:
    sustained = f"{r['sustained_rows_s']:.0f}" if r.get("sustained_rows_s") else "-"
    print(
        f"{name}: {r['embedded']}/{r['rows']} rows in {r['seconds']:.1f} s = {r['rows_s']:.0f} "
        "rows/s "
        f"(sustained {sustained}); index ready {r['index_ready_after_s']:.1f} s later; "
        f"{r['failures']}; peak pg_net answers {r['peak_http_responses']}"
    )


if __name__ == "__main__":
    main()
