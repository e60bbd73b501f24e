"""What the tests share besides fixtures: queue and vector helpers, worker subprocesses, the
user paths (manage.py on a brand-new database), prose to chunk."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from django.db import connection

from django_autoembed.testing import fake_vector


def drain(**options):
    """Run an in-process worker until the queue has no visible job (``--once``)."""
    from django_autoembed.worker import Worker, default_options

    worker = Worker(default_options(once=True, **options))
    assert worker.run() == 0, worker.exit_reason
    return worker


def archived_count(queue: str = "embedding_jobs") -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"select count(*) from pgmq.a_{queue}")
        return cursor.fetchone()[0]


def queue_messages(queue: str = "embedding_jobs") -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(f"select message from pgmq.q_{queue} order by msg_id")
        return [
            row[0] if isinstance(row[0], dict) else __import__("json").loads(row[0])
            for row in cursor.fetchall()
        ]


def queued_ids(queue: str = "embedding_jobs") -> list:
    ids = []
    for m in queue_messages(queue):
        ids.extend(m["ids"] if "ids" in m else [m["id"]])
    return ids


def purge_queue(queue: str = "embedding_jobs") -> None:
    with connection.cursor() as cursor:
        cursor.execute("select pgmq.purge_queue(%s)", [queue])
        cursor.execute(f"delete from pgmq.a_{queue}")


def stored_vector(model, pk, column: str = "embedding"):
    value = model.objects.filter(pk=pk).values_list(column, flat=True).get()
    return (
        None
        if value is None
        else np.asarray(value.to_list() if hasattr(value, "to_list") else value, dtype=np.float32)
    )


def assert_fake_vector(model, pk, text: str, column: str = "embedding", dims: int = 1536) -> None:
    stored = stored_vector(model, pk, column)
    assert stored is not None, f"{model.__name__} {pk} has no embedding"
    np.testing.assert_allclose(stored, fake_vector(text, dims), atol=2e-3)


ROOT = Path(__file__).resolve().parent.parent


def _on_test_database() -> dict[str, str]:
    """The environment of a ``manage.py`` subprocess that works on the test database."""
    env = {
        **os.environ,
        "AUTOEMBED_TEST_DB": connection.settings_dict["NAME"],
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AUTOEMBED_PUSH_TIER", None)
    return env


def start_worker(*args: str) -> subprocess.Popen:
    """``manage.py process_embeddings`` as a real subprocess on the test database."""
    return subprocess.Popen(
        [sys.executable, "-m", "django", "process_embeddings", "--poll-interval=0.3", *args],
        cwd=ROOT,
        env=_on_test_database(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_command(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``manage.py <args>`` run to its end as a subprocess on the test database (system
    checks included), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=_on_test_database(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(predicate, timeout: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(0.05)


def hidden_messages(queue: str = "embedding_jobs") -> int:
    """Messages read by a worker and not yet visible again."""
    with connection.cursor() as cursor:
        cursor.execute(f"select count(*) from pgmq.q_{queue} where vt > clock_timestamp()")
        return cursor.fetchone()[0]


def embedded_pks(model, column: str = "embedding") -> set:
    return set(model.objects.filter(**{f"{column}__isnull": False}).values_list("pk", flat=True))


SENTENCES = [
    "The river bends twice before it reaches the old mill.",
    "Nobody remembers who built the bridge, but everyone crosses it.",
    "In spring the fields turn green and the swallows come back.",
    "The baker opens at five and sells out of rye bread by nine.",
    "A narrow lane climbs past the church to the orchard.",
    "Children gather chestnuts there in the autumn.",
]


def tokens(text: str) -> int:
    from django_autoembed.providers.openai import encoding

    return len(encoding().encode_ordinary(text))


def prose(paragraphs: int, seed: int = 0, per: int = 5) -> str:
    out = []
    for p in range(paragraphs):
        picked = [SENTENCES[(seed + p * 7 + s * 3) % len(SENTENCES)] for s in range(per)]
        out.append(f"Paragraph {p}. " + " ".join(picked))
    return "\n\n".join(out)


def database_url(settings_dict: dict, name: str) -> str:
    """A DATABASE_URL for database ``name`` on the test server (a socket dir goes in the query)."""
    from urllib.parse import quote

    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@"
    host, port = settings_dict.get("HOST") or "", settings_dict.get("PORT") or ""
    if host.startswith("/"):
        return f"postgres://{auth}/{name}?host={quote(host, safe='/')}" + (
            f"&port={port}" if port else ""
        )
    return f"postgres://{auth}{host}" + (f":{port}" if port else "") + f"/{name}"


def server_connection(dbname: str = "postgres"):
    """An autocommit psycopg connection to another database of the test server."""
    import psycopg

    params = {
        k: v
        for k, v in connection.get_connection_params().items()
        if k not in ("cursor_factory", "context")
    }
    params["dbname"] = dbname
    return psycopg.connect(**params, autocommit=True)


def manage(
    cwd: Path, *args: str, env: dict | None = None, timeout: float = 300, stdin: str = ""
) -> subprocess.CompletedProcess:
    """``python manage.py ...`` in ``cwd`` as a user runs it (system checks included)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "AUTOEMBED_", "OPENAI_")) and k != "DATABASE_URL"
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=cwd,
        env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
        input=stdin,  # no terminal: what a prompt reads is this (empty: end of input)
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def change_in_place(app_label: str, model_name: str, *, backwards: bool = False, **changed):
    """Apply (or reverse) the ``ChangeEmbedding`` that makemigrations would write for
    ``model_name``'s config with these trigger arguments changed (``model="..."``), on the
    test database, as ``migrate`` applies it."""
    from django.db.migrations.executor import MigrationExecutor

    from django_autoembed.change_operations import ChangeEmbedding
    from django_autoembed.triggers import EmbeddingTrigger

    state = MigrationExecutor(connection).loader.project_state()
    model_state = state.models[app_label, model_name.lower()]
    [old] = [c for c in model_state.options["constraints"] if isinstance(c, EmbeddingTrigger)]
    _, _, kwargs = old.deconstruct()
    operation = ChangeEmbedding(model_name, EmbeddingTrigger(**{**kwargs, **changed}))
    after = state.clone()
    operation.state_forwards(app_label, after)
    with connection.schema_editor() as editor:
        if backwards:
            operation.database_backwards(app_label, editor, after, state)
        else:
            operation.database_forwards(app_label, editor, state, after)
