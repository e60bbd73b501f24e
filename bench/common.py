"""Shared bench plumbing: Django on the bench database, the fake API, row loading, timing."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from django_autoembed.testing import FakeEmbeddingsServer  # noqa: E402

WORDS = (
    "vector index query embedding postgres table row column search cosine distance "
    "trigger queue worker batch model token latency memory graph neighbour"
).split()


def text_for(i: int, length: int = 670) -> str:
    """~670 characters of different text for every row."""
    words, n = [], i * 7919
    while sum(len(w) + 1 for w in words) < length:
        n = (n * 1103515245 + 12345) % 2**31
        words.append(WORDS[n % len(WORDS)])
    return f"Row {i}: " + " ".join(words)[: length - 8 - len(str(i))]


def setup(vectors: str = "distinct") -> FakeEmbeddingsServer:
    call_command("migrate", verbosity=0)
    # Exact token counts cost the fake a tokenizer pass over every input, on the cores the
    # worker under test needs; the real API counts on its own machines. (bench.ratelimit sets
    # limits, and the fake counts exactly for them.)
    api = FakeEmbeddingsServer(exact_tokens=False, vectors=vectors).start()
    os.environ["AUTOEMBED_BENCH_BASE_URL"] = api.base_url
    return api


def execute(query: str, params: Any = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def purge_queue() -> None:
    """An empty queue, and an empty vector store: no run gets a vector free from an earlier one
    (every loader calls this)."""
    execute("select pgmq.purge_queue('embedding_jobs')")
    execute("delete from pgmq.a_embedding_jobs")
    execute("delete from django_autoembed_storedvector")


def load(table: str, rows: int, columns: str = "title, content", length: int = 670) -> float:
    """Empty ``table`` and insert ``rows`` rows (texts of ``length`` characters) in one
    statement; returns the insert's seconds."""
    execute(f"truncate {table}")
    purge_queue()
    titles = [f"title {i}" for i in range(rows)]
    texts = [text_for(i, length) for i in range(rows)]
    start = time.perf_counter()
    execute(
        f"insert into {table} ({columns}) select * from unnest(%s::text[], %s::text[])",
        [titles, texts],
    )
    return time.perf_counter() - start


def missing(table: str, column: str = "embedding") -> int:
    return execute(f"select count(*) from {table} where {column} is null")[0][0]


def db_url() -> str:
    s = connection.settings_dict
    if s.get("HOST", "").startswith("/"):
        return f"postgresql://{s['USER']}@/{s['NAME']}?host={s['HOST']}&port={s['PORT']}"
    return f"postgresql://{s['USER']}:{s.get('PASSWORD') or ''}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@dataclass
class Run:
    seconds: float  # first API request to process exit
    peak_mb: float
    cpu_seconds: float
    returncode: int
    stderr: str


def run_process(
    cmd: list[str],
    api: FakeEmbeddingsServer,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> Run:
    """Run a worker to completion; time it from the fake API's first request, with its peak RSS."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        deadline = time.monotonic() + timeout
        watched = psutil.Process(proc.pid)
        peak = 0
        while True:
            try:  # sampled: ru_maxrss would count the bench process it was forked from
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                pass
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{cmd[:3]} ran longer than {timeout} s")
            time.sleep(0.005)
        end = time.perf_counter()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    started = api.first_request_at or end
    return Run(
        end - started, peak / 2**20, usage.ru_utime + usage.ru_stime, proc.returncode, stderr
    )


def ours_command(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "django",
        "process_embeddings",
        "--once",
        "--verbosity=0",
        "--settings=bench.settings",
        *args,
    ]


def machine() -> str:
    from importlib.metadata import version as package_version

    import django as dj

    version = execute("select extversion from pg_extension where extname = 'vector'")[0][0]
    server = execute("show server_version")[0][0].split()[0]
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, Django {dj.get_version()}, "
        f"Postgres {server}, pgvector {version}, openai {package_version('openai')}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
