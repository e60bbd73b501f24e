"""A model change with no downtime on 100,000 rows, walked as a user walks it.

A project made by ``startproject`` (the ``notes`` app, declared as in
``tests/integration/test_change_flow.py``) on a database made for the run, the loopback fake
giving each model vectors of its own. The rows (distinct texts of ~600 characters) go in
with one INSERT and are embedded by ``process_embeddings --once`` with
text-embedding-3-small, 1,536 dims: the initial embedding, timed as the baseline. Then:

1. ``before``: an idle worker and a search process (the old code) run for ``--before`` s;
2. the deploy: the worker stops, the declaration moves to text-embedding-3-large at 1,024
   dims, ``makemigrations`` and ``migrate`` run while the old search process keeps
   searching; a new worker (defaults) and a new search process (the new code) start, and
   the old search process stops once the new one searches;
3. ``migrate`` queues the shadow's backfill once it commits; the worker fills it, switches
   searches to it and, after ``CHANGE_NOTICE`` (the default 30 s), cuts over; searches go
   on for ``--after`` s;
4. ``makemigrations`` and ``migrate`` drop the old vectors; searches go on for 20 s.

Each search process loops ``Note.objects.semantic_search(text, k=10)`` on a row's own text
(each text once, so no query comes from the cache), a search every ``--interval`` s, and
logs the whole call (the query's embedding on loopback included) with a timestamp. Its
first 20 searches are left out of the latencies (start-up), not out of the error counts.
A search whose first row is not the row of its text is counted (a query by one model
against vectors of the other would rank at random). The size of ``notes_note`` (table,
TOAST and indexes) is sampled every second; until the switch, the rows the shadow still
lacks are counted every 2 s (a scan of the table, on the cores the fill uses).
``DROP COLUMN`` gives no space back until the table is rewritten: after the run,
``VACUUM FULL`` shows what a rewrite would give (``--no-vacuum-full`` skips it).

``--chunk-tokens N``: the same change of a config stored in chunks. The notes model declares
``EmbeddingConfig(fields=["title", "body"], text_search="english", chunk_tokens=N,
chunk_overlap=16)`` from the start, and the change moves it to the large model at 1,024 dims
and chunks of 2N tokens: ``migrate`` creates the new chunk table
``notes_note_embedding_next_chunks`` beside the live ``notes_note_embedding_chunks``, the
cutover renames the live one ``notes_note_embedding_chunks_previous`` and the new one to the
live name, and the drop migration drops ``_previous``. The size sampled is then
``notes_note``'s and its chunk tables' (live, new and previous, with their indexes); the rows
the shadow still lacks are the rows with no chunk in the new chunk table. A row's own text is
no chunk's text, so a search's query is the text of the row's first chunk, read before each
search from the chunk table searches read then (the live one; the new one between the switch
and the cutover, as the change's recorded state says); a search during which that state moved
is not checked. A search by the wrong model, or of the other chunk table, ranks at random and
is counted.

The new column's tokens: at the cutover its usage moves to the live config, so
``autoembed_status`` shows ``tokens`` 0 in the change's entry from then on; they are read
from ``django_autoembed_embeddingusage`` by model (text-embedding-3-large, mode ``api``),
whichever config holds them, and the usage is printed by config at the switch and the end.

    python -m bench.model_change [--rows 100000] [--latency 0] [--before 60] [--after 60]
                                 [--interval 0.05] [--keep] [--no-vacuum-full]
                                 [--chunk-tokens N]
    python -m bench.model_change --report bench/results/model_change.json  # print it again
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from . import common

HERE = Path(__file__).resolve().parent
DB = "autoembed_model_change"
LARGE = "text-embedding-3-large"
WARMUP = 20  # searches of each process left out of the latencies
NOTES_MODEL = """
from django.db import models

from django_autoembed import EmbeddingMixin


class Note(EmbeddingMixin, models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()

    embed_fields = ["title", "body"]
    embed_text_search = "english"  # a stored tsvector and its GIN index: nothing else to install
"""
LIVE_CHUNKS = "notes_note_embedding_chunks"
NEXT_CHUNKS = "notes_note_embedding_next_chunks"
PREVIOUS_CHUNKS = "notes_note_embedding_chunks_previous"
CHUNK_OVERLAP = 16

SEARCHER = """
import json, os, time, traceback
from notes.models import Note
{query_text}
queries = json.load(open("queries-{name}.json"))
out = open("searches.jsonl", "a")
n = 0
while not os.path.exists("stop-{name}"):
    pk, text = queries[n % len(queries)]
    read = None
    if n >= len(queries):  # every text used once: a new text, no row of its own
        text, pk = f"{{text}} #{{n // len(queries)}}", None
    else:
        chunk, read = query_text(pk, text)
        text, pk = (text, None) if chunk is None else (chunk, pk)  # no chunk: not checked
    n += 1
    started = time.perf_counter()
    try:
        qs = Note.objects.semantic_search(text, k=10)
        embedded = time.perf_counter()
        rows = [note.pk for note in qs]
        done = time.perf_counter()
        moved = read != searched()  # the chunk table searches read changed meanwhile
        out.write(json.dumps({{
            "p": "{name}", "t": time.time(), "ms": (done - started) * 1000,
            "embed_ms": (embedded - started) * 1000, "n": len(rows),
            "hit": None if pk is None or moved else bool(rows) and rows[0] == pk,
        }}) + "\\n")
    except Exception:
        out.write(json.dumps({{
            "p": "{name}", "t": time.time(), "ms": (time.perf_counter() - started) * 1000,
            "error": traceback.format_exc(),
        }}) + "\\n")
    out.flush()
    time.sleep({interval})
"""

PLAIN_QUERY = """
def searched():
    return None


def query_text(pk, text):
    return text, None  # the row's own text
"""

CHUNK_QUERY = f"""
from django.db import DatabaseError, connection

STATE = (
    "select switched is not null and cut_over is null from django_autoembed_embeddingchange "
    "where config = 'notes.Note.embedding'"
)


def searched():
    # The chunk table searches read now: the new one from the switch to the cutover.
    with connection.cursor() as cursor:
        cursor.execute(STATE)
        row = cursor.fetchone()
    return {NEXT_CHUNKS!r} if row and row[0] else {LIVE_CHUNKS!r}


def query_text(pk, text):
    # The text of the row's first chunk in that table; a cutover that renames the tables
    # between the two reads makes it read again.
    for _ in range(10):
        table = searched()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"select text from {{table}} where parent_id = %s order by number limit 1",
                    [pk],
                )
                row = cursor.fetchone()
        except DatabaseError:
            time.sleep(0.05)
            continue
        return (row[0] if row else None), table
    return None, None
"""

SIZES = """
select sum(pg_total_relation_size(r))::bigint, sum(pg_table_size(r))::bigint,
       sum(pg_indexes_size(r))::bigint
  from (select to_regclass(name) r from unnest(%s::text[]) name) tables where r is not null
"""
USAGE = """
select config, model, mode, sum(requests)::int, sum(inputs)::int, sum(tokens)::int
  from django_autoembed_embeddingusage group by 1, 2, 3 order by 1, 2, 3
"""
BUILT = re.compile(r"built the index of \S+ in bulk in ([0-9.]+) s")
CHANGE = "select began, queued, switched, cut_over from django_autoembed_embeddingchange"


# -- the project ---------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment a user's shell gives manage.py (none of the bench's settings)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "AUTOEMBED_", "OPENAI_")) and k != "DATABASE_URL"
    }
    return {**env, "PYTHONUNBUFFERED": "1"}


def manage(project: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode:
        raise RuntimeError(
            f"manage.py {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
        )
    return result


RUNNING: list[subprocess.Popen] = []  # stopped at the end, even on a failure


def popen(project: Path, log: str, *args: str) -> subprocess.Popen:
    with open(project / log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=project,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    RUNNING.append(proc)
    return proc


def stop_all() -> None:
    for proc in RUNNING:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in RUNNING:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def notes_model(chunk_tokens: int | None, new: bool = False) -> str:
    """``notes/models.py`` of a config stored in chunks of ``chunk_tokens`` (None: the plain
    config's, ``NOTES_MODEL``); ``new``: the declaration the change moves it to."""
    if chunk_tokens is None:
        return NOTES_MODEL
    model = f", model={LARGE!r}, dimensions=1024" if new else ""
    return NOTES_MODEL.replace(
        "import EmbeddingMixin", "import EmbeddingConfig, EmbeddingMixin"
    ).replace(
        '    embed_fields = ["title", "body"]\n    embed_text_search = "english"',
        "    embedding_configs = [\n        EmbeddingConfig(\n"
        '            fields=["title", "body"], text_search="english",\n'
        f"            chunk_tokens={chunk_tokens * 2 if new else chunk_tokens}, "
        f"chunk_overlap={CHUNK_OVERLAP}{model},\n        )\n    ]  #",
    )


def declare_new(project: Path, chunk_tokens: int | None = None) -> None:
    """The declaration edited as the user edits it: the large model at 1,024 dims (and, for
    chunks, chunks twice as long)."""
    if chunk_tokens is not None:
        (project / "notes" / "models.py").write_text(notes_model(chunk_tokens, new=True))
        return
    (project / "notes" / "models.py").write_text(
        NOTES_MODEL.replace("import EmbeddingMixin", "import EmbeddingConfig, EmbeddingMixin")
        .replace('    embed_fields = ["title", "body"]\n', "")
        .replace(
            '    embed_text_search = "english"',
            "    embedding_configs = [EmbeddingConfig(fields=['title', 'body'], "
            f"text_search='english', model={LARGE!r}, dimensions=1024)]  #",
        )
    )


def make_project(root: Path, db: dict, base_url: str, chunk_tokens: int | None = None) -> Path:
    project = root / "site"
    project.mkdir()
    env = clean_env()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(project)],
        check=True,
        env=env,
    )
    subprocess.run(
        [sys.executable, "manage.py", "startapp", "notes"], cwd=project, check=True, env=env
    )
    (project / "notes" / "models.py").write_text(notes_model(chunk_tokens))
    settings = project / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + textwrap.dedent(f"""
        INSTALLED_APPS += ["notes", "django_autoembed"]
        DATABASES = {{"default": {{
            "ENGINE": "django.db.backends.postgresql",
            "NAME": {DB!r}, "USER": {db["USER"]!r},
            "PASSWORD": {db.get("PASSWORD") or ""!r}, "HOST": {db.get("HOST") or ""!r},
            "PORT": {str(db.get("PORT") or "")!r},
        }}}}
        AUTOEMBED = {{"API_KEY": "sk-test", "BASE_URL": {base_url!r}}}
    """)
    )
    return project


def connect(db: dict, name: str = DB) -> psycopg.Connection:
    return psycopg.connect(
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=name,
        autocommit=True,
    )


def fresh_database(db: dict) -> None:
    drop_database(db)
    with connect(db, "postgres") as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(DB)))


def drop_database(db: dict) -> None:
    with connect(db, "postgres") as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DB)))


def measured(chunked: bool) -> list[str]:
    """The tables whose size is sampled: ``notes_note``, and its chunk tables for chunks (the
    live one, the new one until the cutover, the previous one until the drop)."""
    return ["notes_note", LIVE_CHUNKS, NEXT_CHUNKS, PREVIOUS_CHUNKS] if chunked else ["notes_note"]


def status(project: Path) -> dict:
    out = manage(project, "autoembed_status", "--json", "--exact").stdout
    return json.loads(out)


# -- what is sampled while the change runs -----------------------------------------------


class Sampler(threading.Thread):
    """Every second: the table's size, the load average, the change's timestamps, the queue;
    until the switch, the shadow's rows left and whether its index is valid. For chunks, the
    size is the chunk tables' too, and a row the shadow lacks is one with no chunk in the new
    chunk table."""

    def __init__(self, db: dict, shadow_index: str, chunked: bool = False) -> None:
        super().__init__(daemon=True, name="sampler")
        self.db = db
        self.shadow_index = shadow_index
        self.tables = measured(chunked)
        self.left = (
            f"select count(*) from notes_note t where not exists (select from {NEXT_CHUNKS} n "
            "where n.parent_id = t.id)"
            if chunked
            else "select count(*) from notes_note where embedding_next is null"
        )
        self.samples: list[dict] = []
        self.change: dict = {}
        self.stopped = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            with connect(self.db) as conn:
                tick = 0
                while not self.stopped.is_set():
                    self.samples.append(self.sample(conn, tick))
                    tick += 1
                    self.stopped.wait(1.0)
        except Exception as exc:  # reported by the main thread
            self.error = repr(exc)

    def sample(self, conn: psycopg.Connection, tick: int) -> dict:
        total, table, indexes = conn.execute(SIZES, [self.tables]).fetchone()
        row = conn.execute(CHANGE).fetchone()
        out = {
            "t": time.time(),
            "total": total,
            "table": table,
            "indexes": indexes,
            "load1": os.getloadavg()[0],
            "queue": conn.execute("select count(*) from pgmq.q_embedding_jobs").fetchone()[0],
        }
        if row is not None:
            keys = ("began", "queued", "switched", "cut_over")
            self.change = {k: v.timestamp() if v else None for k, v in zip(keys, row, strict=True)}
            out["phase"] = next((k for k in reversed(keys) if self.change[k]), None)
            if self.change["switched"] is None:
                valid = conn.execute(
                    "select indisvalid from pg_index where indexrelid = to_regclass(%s)",
                    [self.shadow_index],
                ).fetchone()
                out["shadow_index"] = "missing" if valid is None else bool(valid[0])
                if tick % 2 == 0:  # a scan of the table: every other second
                    out["shadow_left"] = conn.execute(self.left).fetchone()[0]
        return out


# -- the run --------------------------------------------------------------------------------


def wait_until(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: process {proc.args[2:4]} exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def searches(project: Path) -> list[dict]:
    path = project / "searches.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def count(project: Path, name: str) -> int:
    return sum(1 for s in searches(project) if s["p"] == name)


def stop(proc: subprocess.Popen, timeout: float = 120) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout)


def run(args: argparse.Namespace, root: Path) -> dict:
    from django.db import connection

    from django_autoembed.changes import index_name
    from django_autoembed.testing import FakeEmbeddingsServer

    db = dict(connection.settings_dict)
    chunk_tokens = args.chunk_tokens
    chunked = chunk_tokens is not None
    tables = measured(chunked)
    result: dict = {
        "machine": common.machine(),
        "rows": args.rows,
        "chunk_tokens": chunk_tokens,
        "chunk_tokens_new": chunk_tokens * 2 if chunked else None,
        "chunk_overlap": CHUNK_OVERLAP if chunked else None,
        "latency": args.latency,
        "interval": args.interval,
        "load_at_start": os.getloadavg(),
        "events": {},
    }
    events = result["events"]
    fresh_database(db)
    # As common.setup: estimated token counts spare the cores a tokenizer pass per input.
    api = FakeEmbeddingsServer(exact_tokens=False, latency=args.latency).start()
    api.model_vectors = True
    project = make_project(root, db, api.base_url, chunk_tokens)
    manage(project, "makemigrations")
    manage(project, "migrate")

    # The rows, and their first vectors (the baseline).
    titles = [f"Note {i}" for i in range(args.rows)]
    bodies = [common.text_for(i, 600) for i in range(args.rows)]
    with connect(db) as conn:
        started = time.perf_counter()
        conn.execute(
            "insert into notes_note (title, body) select * from unnest(%s::text[], %s::text[])",
            [titles, bodies],
        )
        result["insert_s"] = time.perf_counter() - started
        ids = [r[0] for r in conn.execute("select id from notes_note order by id").fetchall()]
    started = time.perf_counter()
    manage(project, "process_embeddings", "--once")
    result["initial"] = {
        "seconds": time.perf_counter() - started,  # process start-up included
        "inputs": api.inputs,
        "tokens_fake": api.tokens,
        "requests": api.requests,
    }
    with connect(db) as conn:
        left = conn.execute(
            f"select count(*) from notes_note t where not exists (select from {LIVE_CHUNKS} c "
            "where c.parent_id = t.id)"
            if chunked
            else "select count(*) from notes_note where embedding is null"
        ).fetchone()
        if left[0]:
            raise RuntimeError(f"{left[0]} rows have no vector after the initial embedding")
        if chunked:
            result["chunks_initial"] = conn.execute(
                f"select count(*) from {LIVE_CHUNKS}"
            ).fetchone()[0]
    result["status_initial"] = status(project)
    api.texts.clear()

    # Distinct query texts: each row's own text (for chunks, its first chunk's), once.
    order = list(range(args.rows))
    random.Random(7).shuffle(order)
    queries = [[ids[i], f"{titles[i]}\n\n{bodies[i]}"] for i in order]
    half = len(queries) // 4
    (project / "queries-old.json").write_text(json.dumps(queries[:half]))
    (project / "queries-new.json").write_text(json.dumps(queries[half:]))

    shadow_index = (
        index_name(NEXT_CHUNKS, "embedding")
        if chunked
        else index_name("notes_note", "embedding_next")
    )
    sampler = Sampler(db, shadow_index, chunked)
    query_text = CHUNK_QUERY if chunked else PLAIN_QUERY
    sampler.start()
    old_worker = popen(project, "worker-old.log", "process_embeddings")
    old_search = popen(
        project,
        "search-old.log",
        "shell",
        "-c",
        SEARCHER.format(name="old", interval=args.interval, query_text=query_text),
    )
    wait_until(lambda: count(project, "old") >= WARMUP, 120, "the first searches", [old_search])
    events["before_start"] = time.time()
    time.sleep(args.before)

    # The deploy: workers stop, the declaration changes, migrate; web processes restart.
    stop(old_worker)
    declare_new(project, chunk_tokens)
    started = time.perf_counter()
    made = manage(project, "makemigrations")
    result["makemigrations_s"] = time.perf_counter() - started
    wrote = f"Note's chunks ({LIVE_CHUNKS})" if chunked else "note.embedding"
    if f"Change the embedding of {wrote}" not in made.stdout:
        raise RuntimeError(f"makemigrations wrote no ChangeEmbedding:\n{made.stdout}")
    fake_before = (api.inputs, api.tokens, api.requests)
    events["migrate_start"] = time.time()
    migrated = manage(project, "migrate")
    events["migrate_end"] = time.time()
    result["migrate_stdout"] = migrated.stdout
    worker = popen(project, "worker.log", "process_embeddings")
    events["worker_started"] = time.time()
    worker_ps = psutil.Process(worker.pid)
    search = popen(
        project,
        "search-new.log",
        "shell",
        "-c",
        SEARCHER.format(name="new", interval=args.interval, query_text=query_text),
    )
    wait_until(lambda: count(project, "new") >= WARMUP, 120, "the new searches", [search, worker])
    (project / "stop-old").touch()
    old_search.wait(timeout=60)
    events["old_search_stopped"] = time.time()

    # Fill, switch, cut over.
    status_switched = None
    deadline = time.monotonic() + args.timeout
    while not sampler.change.get("cut_over"):
        for proc in (worker, search):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[2:4]} exited {proc.returncode} during the change")
        if sampler.error:
            raise RuntimeError(f"sampler: {sampler.error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no cutover after {args.timeout:.0f} s")
        if sampler.change.get("switched") and status_switched is None:
            status_switched = status(project)  # the shadow's tokens, before it is renamed
            with connect(db) as conn:
                result["usage_switched"] = [list(r) for r in conn.execute(USAGE).fetchall()]
        time.sleep(0.2)
    events["cut_over_seen"] = time.time()
    fake_after = (api.inputs, api.tokens, api.requests)
    result["worker_cpu_s_at_cutover"] = sum(worker_ps.cpu_times()[:2])
    result["status_switched"] = status_switched
    result["status_cut_over"] = status(project)
    time.sleep(args.after)

    # The drop.
    events["drop_start"] = time.time()
    made = manage(project, "makemigrations")
    if "Drop the old vectors" not in made.stdout:
        raise RuntimeError(f"makemigrations wrote no drop:\n{made.stdout}")
    events["drop_migrate_start"] = time.time()
    manage(project, "migrate")
    events["drop_end"] = time.time()
    time.sleep(20)
    events["end"] = time.time()
    (project / "stop-new").touch()
    search.wait(timeout=60)
    result["worker_cpu_s"] = sum(worker_ps.cpu_times()[:2])
    stop(worker)
    time.sleep(1.5)
    sampler.stopped.set()
    sampler.join()
    result["status_end"] = status(project)

    with connect(db) as conn:
        result["columns"] = [
            r[0]
            for r in conn.execute(
                "select attname from pg_attribute where attrelid = 'notes_note'::regclass "
                "and attnum > 0 and not attisdropped order by attnum"
            ).fetchall()
        ]
        result["indexes"] = dict(
            conn.execute(
                "select indexrelid::regclass::text, pg_relation_size(indexrelid) from pg_index "
                "where indrelid = any(array(select to_regclass(t) from unnest(%s::text[]) t))",
                [tables],
            ).fetchall()
        )
        if chunked:
            result["chunk_tables_end"] = [
                r[0]
                for r in conn.execute(
                    "select t from unnest(%s::text[]) t where to_regclass(t) is not null",
                    [tables[1:]],
                ).fetchall()
            ]
            result["chunks_end"] = conn.execute(f"select count(*) from {LIVE_CHUNKS}").fetchone()[0]
        result["size_after_drop"] = conn.execute(SIZES, [tables]).fetchone()
        if not args.no_vacuum_full:
            started = time.perf_counter()
            conn.execute("vacuum full notes_note")
            if chunked:
                conn.execute(f"vacuum full {LIVE_CHUNKS}")
            result["vacuum_full_s"] = time.perf_counter() - started
            result["size_after_vacuum_full"] = conn.execute(SIZES, [tables]).fetchone()
        result["usage"] = [list(r) for r in conn.execute(USAGE).fetchall()]
        result["incidents"] = conn.execute(
            "select count(*) from django_autoembed_incident"
        ).fetchone()[0]
    result["change"] = sampler.change
    result["samples"] = sampler.samples
    result["fake_change"] = {
        "inputs": fake_after[0] - fake_before[0],
        "tokens": fake_after[1] - fake_before[1],
        "requests": fake_after[2] - fake_before[2],
    }
    result["searches"] = searches(project)
    logs = {}
    for log in ("worker-old.log", "worker.log", "search-old.log", "search-new.log"):
        text = (project / log).read_text()
        lines = [ln for ln in text.splitlines() if " INFO " in ln or "WARNING" in ln]
        lines += [ln for ln in text.splitlines() if "ERROR" in ln or ln.startswith("Embedded")]
        logs[log] = {"tracebacks": text.count("Traceback"), "lines": lines, "tail": text[-3000:]}
    result["logs"] = logs
    return result


# -- what it comes to ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def analyse(result: dict) -> dict:
    ev, change, samples = result["events"], result["change"], result["samples"]
    filled = next(
        (s["t"] for s in samples if s.get("shadow_left") == 0 and s["t"] >= ev["migrate_end"]),
        None,
    )
    # The worker logs the shadow index's bulk build; the switch follows within a tick or two,
    # often before a sample sees the index valid.
    built = next(
        (
            (
                datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp(),
                float(match.group(1)),
            )
            for line in result["logs"]["worker.log"]["lines"]
            if (match := BUILT.search(line))
        ),
        (None, None),
    )
    complete = next(
        (s["t"] for s in samples if filled and s["t"] >= filled and s.get("shadow_index") is True),
        None,
    )
    complete = min(t for t in (complete, built[0], change["switched"]) if t is not None)
    # Search phases, by the time a search ended. The migration queues the backfill (85d7733),
    # so "queued" falls inside migrate: "deploy" is the rolling deploy (migrate done, the new
    # worker filling, old and new code searching), "filling" the new code alone until the
    # shadow is complete. (Runs before 85d7733: the worker queued it after migrate.)
    deploy_end = ev.get("old_search_stopped") or change["queued"]
    if change["queued"] and change["queued"] > deploy_end:
        deploy_end = change["queued"]
    bounds = [
        ("before", ev["before_start"]),
        ("migrate", ev["migrate_start"]),
        ("deploy", ev["migrate_end"]),
        ("filling", deploy_end),
        ("complete, not switched", complete),
        ("switched", change["switched"]),
        ("after cutover", change["cut_over"]),
        ("drop migration", ev["drop_start"]),
        ("after drop", ev["drop_end"]),
        ("end", ev["end"]),
    ]
    seen: dict[str, int] = {}
    phases: dict[str, dict] = {name: {"ms": [], "embed_ms": [], "all": []} for name, _ in bounds}
    for s in sorted(result["searches"], key=lambda s: s["t"]):
        seen[s["p"]] = seen.get(s["p"], 0) + 1
        name = None
        for (phase, start), (_, end) in itertools.pairwise(bounds):
            if start is not None and end is not None and start <= s["t"] < end:
                name = phase
        if name is None:
            continue
        phases[name]["all"].append(s)
        if "error" not in s and seen[s["p"]] > WARMUP:
            phases[name]["ms"].append(s["ms"])
            phases[name]["embed_ms"].append(s["embed_ms"])
    table = {}
    for name, _ in bounds[:-1]:
        p = phases[name]
        done = [s for s in p["all"] if "error" not in s]
        table[name] = {
            "searches": len(p["all"]),
            "timed": len(p["ms"]),
            "processes": sorted({s["p"] for s in p["all"]}),
            "p50_ms": percentile(p["ms"], 50),
            "p95_ms": percentile(p["ms"], 95),
            "p99_ms": percentile(p["ms"], 99),
            "max_ms": max(p["ms"]) if p["ms"] else None,
            "embed_p50_ms": percentile(p["embed_ms"], 50),
            "errors": len(p["all"]) - len(done),
            "short": sum(1 for s in done if s["n"] < 10),
            "wrong_first": sum(1 for s in done if s["hit"] is False),
            "checked_first": sum(1 for s in done if s["hit"] is not None),
        }
    all_searches = result["searches"]
    errors = [s["error"] for s in all_searches if "error" in s]

    def size_at(start: float, end: float) -> list[int]:
        return [s["total"] for s in samples if start <= s["t"] <= end]

    before_sizes = size_at(0, ev["migrate_start"])
    change_sizes = size_at(ev["migrate_start"], ev["drop_start"])
    peak = max(samples[: len(samples)], key=lambda s: s["total"]) if samples else None
    shadow_status = result.get("status_switched") or {}
    shadow_cfg = next(
        (c for c in shadow_status.get("configs", []) if c["config"] == "notes.Note.embedding_next"),
        {},
    )

    def used(model: str, mode: str) -> dict:
        rows = [u for u in result["usage"] if u[1] == model and u[2] == mode]
        return {
            "requests": sum(u[3] for u in rows),
            "inputs": sum(u[4] for u in rows),
            "tokens": sum(u[5] for u in rows),
        }

    return {
        "wall": {
            "initial_embedding_s": result["initial"]["seconds"],
            "migrate_s": ev["migrate_end"] - ev["migrate_start"],
            "migrate_to_queued_s": change["queued"] - ev["migrate_start"],
            "queued_to_filled_s": filled - change["queued"] if filled else None,
            "worker_to_filled_s": (
                filled - ev["worker_started"] if filled and "worker_started" in ev else None
            ),
            "filled_to_complete_s": (complete - filled) if filled else None,
            "index_build_s": built[1],
            "complete_to_switched_s": change["switched"] - complete,
            "migrate_to_complete_s": complete - ev["migrate_start"],
            "migrate_to_switched_s": change["switched"] - ev["migrate_start"],
            "switched_to_cut_over_s": change["cut_over"] - change["switched"],
            "migrate_to_cut_over_s": change["cut_over"] - ev["migrate_start"],
            "drop_makemigrations_s": ev["drop_migrate_start"] - ev["drop_start"],
            "drop_migrate_s": ev["drop_end"] - ev["drop_migrate_start"],
        },
        "size": {
            "before": max(before_sizes) if before_sizes else None,
            "peak": max(change_sizes) if change_sizes else None,
            "peak_sample": peak,
            "after_drop": result["size_after_drop"],
            "after_vacuum_full": result.get("size_after_vacuum_full"),
        },
        "searches": table,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "short": sum(1 for s in all_searches if "error" not in s and s["n"] < 10),
        "shadow": {
            "status_rows": shadow_cfg.get("embedded"),
            "status_chunks": shadow_cfg.get("chunks"),
            "status_tokens_30d": shadow_cfg.get("tokens_30d"),
            "status_cost_30d_usd": shadow_cfg.get("cost_30d_usd"),
            "change_entry": next(iter(shadow_status.get("changes", [])), {}),
            "change_entry_cut_over": next(
                iter((result.get("status_cut_over") or {}).get("changes", [])), {}
            ),
            "live_end": next(
                (
                    c
                    for c in (result.get("status_end") or {}).get("configs", [])
                    if c["config"] == "notes.Note.embedding"
                ),
                {},
            ),
            "embedded": used(LARGE, "api"),
            "queries": used(LARGE, "query"),
            "fake_inputs": result["fake_change"]["inputs"],
            "fake_requests": result["fake_change"]["requests"],
        },
        "initial": {
            "embedded": used("text-embedding-3-small", "api"),
            "queries": used("text-embedding-3-small", "query"),
        },
        "load_max": max((s["load1"] for s in samples), default=None),
    }


def mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MB"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def report(result: dict, summary: dict) -> None:
    w, size, table = summary["wall"], summary["size"], summary["searches"]
    load = result["load_at_start"]
    chunk_tokens = result.get("chunk_tokens")  # None: the plain config (and runs before it)
    chunked = chunk_tokens is not None
    target = "the new chunk table" if chunked else "the shadow"
    print(f"\nModel change, {result['rows']:,} rows, {result['machine']}")
    if chunked:
        print(
            f"In chunks: {chunk_tokens} tokens (overlap {result['chunk_overlap']}) -> "
            f"{result['chunk_tokens_new']} tokens with the new model; "
            f"{result['chunks_initial']:,} chunks before, {result['chunks_end']:,} after "
            f"(chunk tables left at the end: {', '.join(result['chunk_tables_end'])})"
        )
    print(
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"highest 1-min sample {summary['load_max']:.2f}"
    )
    print(
        f"API latency {result['latency'] * 1000:.0f} ms, a search every "
        f"{result['interval'] * 1000:.0f} ms"
    )
    print("\nWall time")
    print(
        f"  insert {result['insert_s']:.1f} s; initial embedding (--once, start-up "
        f"included) {w['initial_embedding_s']:.1f} s"
    )
    for key, label in [
        ("migrate_s", "migrate"),
        ("migrate_to_queued_s", "migrate start -> backfill queued"),
        ("queued_to_filled_s", f"queued -> every row in {target} (sampled every 2 s)"),
        ("worker_to_filled_s", f"new worker started -> every row in {target}"),
        ("filled_to_complete_s", f"filled -> {target}'s index valid (built after the fill)"),
        ("index_build_s", "  of which the index build (worker's log)"),
        ("migrate_to_complete_s", f"migrate start -> {target} complete"),
        ("complete_to_switched_s", f"{target} complete -> switched"),
        ("migrate_to_switched_s", "migrate start -> switched"),
        ("switched_to_cut_over_s", "switched -> cut over"),
        ("migrate_to_cut_over_s", "migrate start -> cut over (total)"),
        ("drop_makemigrations_s", "drop: makemigrations"),
        ("drop_migrate_s", "drop: migrate"),
    ]:
        value = w[key]
        print(f"  {label}: {'-' if value is None else f'{value:.1f} s'}")
    fill = w.get("worker_to_filled_s") or w["queued_to_filled_s"]
    if fill:
        print(f"  {target} filled / initial embedding: {ratio(fill, w['initial_embedding_s'])}")
    if w["migrate_to_complete_s"] is not None:
        print(
            f"  {target} complete and indexed (from migrate) / initial embedding: "
            f"{ratio(w['migrate_to_complete_s'], w['initial_embedding_s'])}"
        )
    print("\nWhat migrate printed")
    for line in result["migrate_stdout"].splitlines():
        if not line.startswith(("Operations", "  Apply", "Running", "  Applying")):
            print(f"  {line}")
    if chunked:
        print(
            "\nSize of notes_note and its chunk tables (live, new until the cutover, previous "
            "until the drop; tables + TOAST + indexes)"
        )
    else:
        print("\nSize of notes_note (table + TOAST + indexes)")
    peak = size["peak_sample"] or {}
    print(
        f"  before {mb(size['before'])}; peak {mb(size['peak'])} "
        f"({ratio(size['peak'], size['before'])}; table {mb(peak.get('table'))}, "
        f"indexes {mb(peak.get('indexes'))}, phase {peak.get('phase')})"
    )
    after = size["after_drop"]
    print(
        f"  after the drop {mb(after[0])} (table {mb(after[1])}, indexes {mb(after[2])}; "
        + (
            "the old chunk table is dropped, its space given back)"
            if chunked
            else "DROP COLUMN leaves the old vectors in the table until a rewrite)"
        )
    )
    if size["after_vacuum_full"]:
        v = size["after_vacuum_full"]
        print(
            f"  after VACUUM FULL {mb(v[0])} (table {mb(v[1])}, indexes {mb(v[2])}) in "
            f"{result['vacuum_full_s']:.1f} s"
        )
    print("\nSearches (semantic_search k=10, whole call; ms)")
    print(
        f"  {'phase':24} {'n':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} "
        f"{'embed p50':>9} {'err':>4} {'<10':>4} {'wrong 1st':>9}"
    )
    for name, row in table.items():

        def f(v):
            return "-" if v is None else f"{v:.1f}"

        print(
            f"  {name:24} {row['searches']:>6} {f(row['p50_ms']):>7} {f(row['p95_ms']):>7} "
            f"{f(row['p99_ms']):>7} {f(row['max_ms']):>7} {f(row['embed_p50_ms']):>9} "
            f"{row['errors']:>4} {row['short']:>4} {row['wrong_first']:>4}/{row['checked_first']}"
        )
    before, filling, after_cut = table["before"], table["filling"], table["after cutover"]
    print(
        f"  p50 filling/before {ratio(filling['p50_ms'], before['p50_ms'])}, "
        f"p95 {ratio(filling['p95_ms'], before['p95_ms'])}; "
        f"p50 after/before {ratio(after_cut['p50_ms'], before['p50_ms'])}, "
        f"p95 {ratio(after_cut['p95_ms'], before['p95_ms'])}"
    )
    print(f"  failed searches {summary['errors']}, fewer than 10 rows {summary['short']}")
    if summary["first_error"]:
        print(f"  first failure:\n{summary['first_error']}")
    shadow, initial = summary["shadow"], summary["initial"]
    print("\nEmbedded (the usage table autoembed_status reads; tokens are the fake's estimate)")
    for name, part in (("initial, small", initial), ("shadow, large", shadow)):
        e, q = part["embedded"], part["queries"]
        print(
            f"  {name}: {e['inputs']:,} inputs, {e['tokens']:,} tokens in {e['requests']:,} "
            f"requests; search queries {q['inputs']:,}, {q['tokens']:,} tokens"
        )
    print(
        f"  autoembed_status at the switch: embedding_next {shadow['status_rows']} rows "
        + ("" if shadow.get("status_chunks") is None else f"({shadow['status_chunks']} chunks) ")
        + f"embedded, tokens_30d {shadow['status_tokens_30d']} (queries included), "
        f"change entry done {shadow['change_entry'].get('done')}, "
        f"tokens {shadow['change_entry'].get('tokens')}"
    )
    cut, live = shadow["change_entry_cut_over"], shadow["live_end"]
    print(
        f"  autoembed_status after the cutover: change entry done {cut.get('done')}, tokens "
        f"{cut.get('tokens')} (the usage moved to the live config); at the end the live "
        f"config: {live.get('embedded')} rows embedded, tokens_30d {live.get('tokens_30d')}, "
        f"cost_30d_usd {live.get('cost_30d_usd')} (both models, queries included)"
    )
    print("  usage by config (config, model, mode, requests, inputs, tokens):")
    for when, rows in (("at the switch", result.get("usage_switched")), ("end", result["usage"])):
        for row in rows or []:
            print(f"    {when}: {row}")
    print("\nThe worker's log")
    for line in result["logs"]["worker.log"]["lines"]:
        print(f"  {line}")
    for log, info in result["logs"].items():
        if info["tracebacks"]:
            print(f"  {log}: {info['tracebacks']} tracebacks")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.0, help="the fake API's, seconds")
    parser.add_argument("--before", type=float, default=60.0, help="seconds of searches before")
    parser.add_argument("--after", type=float, default=60.0, help="seconds after the cutover")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between searches")
    parser.add_argument("--timeout", type=float, default=3600.0, help="for the cutover")
    parser.add_argument("--keep", action="store_true", help="keep the project and database")
    parser.add_argument("--no-vacuum-full", action="store_true")
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        metavar="N",
        help="a config stored in chunks of N tokens, changed to chunks of 2N (default: plain)",
    )
    parser.add_argument("--report", metavar="JSON", help="print the report of a saved run")
    args = parser.parse_args()
    if args.report:
        result = json.loads(Path(args.report).read_text())
        report(result, analyse(result))
        print(f"\nrun time {result['run_s'] / 60:.1f} min")
        return
    root = Path(tempfile.mkdtemp(prefix="autoembed-model-change-"))
    started = time.perf_counter()
    try:
        result = run(args, root)
    except BaseException:
        print(f"The project and its logs are kept in {root}", file=sys.stderr)
        raise
    finally:
        stop_all()
    result["run_s"] = time.perf_counter() - started
    summary = analyse(result)
    result["summary"] = summary
    report(result, summary)
    print(f"\nrun time {result['run_s'] / 60:.1f} min")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "model_change.json").write_text(json.dumps(result, indent=2, default=str))
    if args.keep:
        print(f"project kept in {root} and database {DB}")
    else:
        shutil.rmtree(root, ignore_errors=True)
        from django.db import connection

        drop_database(dict(connection.settings_dict))


if __name__ == "__main__":
    main()
