"""A model change with no downtime, walked as a user walks it: edit the declaration, run
``makemigrations`` and ``migrate``, let the worker fill the new column and cut over, then
write and apply the migration that drops the old vectors. Searches run throughout, in a
process of their own as a web server's would, with the fake giving each model vectors of
its own: a search that compared a query of one model with rows of the other would rank
rows at random, and is caught."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from django_autoembed.testing import fake_vector
from tests.helpers import manage, server_connection, wait_for
from tests.integration.conftest import NOTES_MODEL

LARGE = "text-embedding-3-large"
TITLES = [f"Note {n:03d}" for n in range(120)] + ["Bread"]
QUERY = "Bread\n\nBread body"  # the text the row 'Bread' embeds: its own vector, first

SEARCHER = """
import json, os, time, traceback
from notes.models import Note

out = open("searches-{name}.jsonl", "a")
while not os.path.exists("stop-{name}"):
    try:
        rows = [n.title for n in Note.objects.semantic_search({query!r}, k=5)]
        out.write(json.dumps({{"n": len(rows), "first": rows[0] if rows else None}}) + "\\n")
    except Exception as exc:
        out.write(json.dumps({{"error": traceback.format_exc()}}) + "\\n")
    out.flush()
    time.sleep(0.02)
"""


def declare(project, **config) -> None:
    """The notes app declares its config in full, with these arguments."""
    args = ", ".join(f"{k}={v!r}" for k, v in config.items())
    (project / "notes" / "models.py").write_text(
        NOTES_MODEL.replace("import EmbeddingMixin", "import EmbeddingConfig, EmbeddingMixin")
        .replace('    embed_fields = ["title", "body"]\n', "")
        .replace(
            '    embed_text_search = "english"',
            "    embedding_configs = [EmbeddingConfig(fields=['title', 'body'], "
            f"text_search='english', {args})]  #",
        )
    )


def ok(result, what: str):
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"
    return result


def sql(dbname: str, query: str, *params):
    with server_connection(dbname) as conn:
        return conn.execute(query, params).fetchall()


def popen(project, *args: str, **kwargs) -> subprocess.Popen:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "AUTOEMBED_", "OPENAI_")) and k != "DATABASE_URL"
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def change_row(dbname: str) -> tuple | None:
    rows = sql(
        dbname,
        "select queued is not null, switched is not null, cut_over is not null, model "
        "from django_autoembed_embeddingchange",
    )
    return rows[0] if rows else None


def vectors(dbname: str, column: str = "embedding") -> dict:
    rows = sql(dbname, f"select title, body, {column}::text from notes_note order by id")
    return {
        title: (body, None if text is None else np.array(json.loads(text), dtype=np.float32))
        for title, body, text in rows
    }


@pytest.fixture
def live_site(startproject, fresh_database, api):
    """The notes site with 121 rows embedded by text-embedding-3-small, the fake giving each
    model its own vectors, and model changes that wait 1 s for every process."""
    api.model_vectors = True
    settings = startproject / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nAUTOEMBED["CHANGE_NOTICE"] = 1\n')
    ok(manage(startproject, "makemigrations"), "makemigrations")
    ok(manage(startproject, "migrate"), "migrate")
    made = manage(
        startproject,
        "shell",
        "-c",
        "from notes.models import Note; "
        f"Note.objects.bulk_create([Note(title=t, body=t + ' body') for t in {TITLES!r}])",
    )
    ok(made, "bulk_create")
    ok(manage(startproject, "process_embeddings", "--once"), "process_embeddings")
    return startproject


def searches(project, name: str = "new") -> list[dict]:
    path = project / f"searches-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_model_change_runs_from_makemigrations_to_the_drop_with_searches_throughout(
    live_site, fresh_database, api
):
    db = fresh_database["name"]
    # A web process running the old declaration, until the new one is deployed.
    old_searcher = popen(live_site, "shell", "-c", SEARCHER.format(query=QUERY, name="old"))
    searcher = worker = None
    old_out = ""
    try:
        wait_for(lambda: len(searches(live_site, "old")) > 5, 60, "searches before the change")

        declare(live_site, model=LARGE, dimensions=1024)
        made = ok(manage(live_site, "makemigrations"), "makemigrations")
        assert "Change the embedding of Note.embedding" in made.stdout, made.stdout
        ok(manage(live_site, "migrate"), "migrate")
        assert change_row(db) == (True, False, False, LARGE)  # its backfill queued
        # The live column is as it was: old vectors, old dimensions, searched by the old model.
        assert sql(db, "select count(*) from notes_note where embedding_next is not null") == [(0,)]
        before = len(searches(live_site, "old"))
        wait_for(lambda: len(searches(live_site, "old")) > before + 5, 60, "old code, migrated")
        # The deploy restarts the web process with the new declaration.
        searcher = popen(live_site, "shell", "-c", SEARCHER.format(query=QUERY, name="new"))
        wait_for(lambda: len(searches(live_site)) > 5, 60, "searches by the new code")
        (live_site / "stop-old").touch()
        old_out = old_searcher.communicate(timeout=60)[0]
        before = len(searches(live_site))

        status = ok(manage(live_site, "autoembed_status"), "autoembed_status")
        assert "notes.Note.embedding_next" in status.stdout, status.stdout

        worker = popen(live_site, "process_embeddings", "--poll-interval=0.2")
        # A live edit during the change: queued for both columns, each by its own model.
        ok(
            manage(
                live_site,
                "shell",
                "-c",
                "from notes.models import Note; "
                "Note.objects.filter(title='Note 007').update(body='edited while changing')",
            ),
            "edit",
        )
        wait_for(lambda: (change_row(db) or (0, 0, 0))[2], 120, "the automatic cutover")

        stored = vectors(db)
        for title, (body, vector) in stored.items():
            np.testing.assert_allclose(
                vector, fake_vector(f"{title}\n\n{body}", 1024, LARGE), atol=2e-3, err_msg=title
            )
        previous = vectors(db, "embedding_previous")
        assert len(previous["Note 000"][1]) == 1536  # the old vectors, kept until the drop
        assert sql(db, "select model, dimensions from django_autoembed_embeddingidentity") == [
            (LARGE, 1024)
        ]
        wait_for(lambda: len(searches(live_site)) > before + 200, 60, "searches after cutover")

        made = ok(manage(live_site, "makemigrations"), "makemigrations (the drop)")
        assert "Drop the old vectors" in made.stdout, made.stdout
        ok(manage(live_site, "migrate"), "migrate (the drop)")
        columns = {
            name
            for (name,) in sql(
                db,
                "select attname from pg_attribute where attrelid = 'notes_note'::regclass "
                "and attnum > 0 and not attisdropped",
            )
        }
        assert "embedding_previous" not in columns and "embedding_next" not in columns
        assert change_row(db) is None
        checked = manage(live_site, "check", "--database", "default")
        assert checked.returncode == 0, checked.stderr
        ok(manage(live_site, "makemigrations", "--check", "--dry-run"), "nothing left to migrate")
        time.sleep(0.5)
    finally:
        (live_site / "stop-old").touch()
        (live_site / "stop-new").touch()
        if worker is not None:
            worker.send_signal(signal.SIGINT)
            worker_out = worker.communicate(timeout=60)[0]
            print("worker:", worker_out[-5000:])  # shown if the test fails
            print("status:", manage(live_site, "autoembed_status").stdout)
        searcher_out = searcher.communicate(timeout=60)[0] if searcher else ""
        old_searcher.wait(timeout=60)
    done = searches(live_site, "old") + searches(live_site)
    errors = [s["error"] for s in done if "error" in s]
    assert not errors, f"{len(errors)} searches failed, the first:\n{errors[0]}\n{searcher_out}"
    assert "Traceback" not in old_out, old_out
    assert len(done) > 300
    assert all(s["n"] == 5 for s in done), [s for s in done if s["n"] != 5][:3]
    wrong = [s for s in done if s["first"] != "Bread"]
    assert not wrong, f"{len(wrong)} of {len(done)} searches ranked another row first"
    assert "Traceback" not in worker_out, worker_out


def shadow_done(db: str) -> int:
    return sql(db, "select count(*) from notes_note where embedding_next is not null")[0][0]


def search_first(project) -> str:
    found = ok(
        manage(
            project,
            "shell",
            "-c",
            "from notes.models import Note; "
            f"print([n.title for n in Note.objects.semantic_search({QUERY!r}, k=5)])",
        ),
        "search",
    )
    return found.stdout.strip().splitlines()[-1]


def test_a_held_change_is_compared_then_cut_over_by_hand_and_survives_kills(
    live_site, fresh_database, api
):
    """The estimate before anything is spent, a worker killed half way through the backfill,
    the comparison before the cutover, and a cutover killed between its two steps."""
    db = fresh_database["name"]
    settings = live_site / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + '\nAUTOEMBED["CHANGE_AUTOMATIC_CUTOVER"] = False\nAUTOEMBED["BATCH_SIZE"] = 5\n'
        + 'AUTOEMBED["MAX_REQUESTS"] = 1\nAUTOEMBED["CONCURRENCY"] = 1\n'
    )
    declare(live_site, model=LARGE)
    ok(manage(live_site, "makemigrations"), "makemigrations")
    migrated = ok(manage(live_site, "migrate"), "migrate")
    assert "Embedding every row again" in migrated.stdout, migrated.stdout
    assert "text-embedding-3-large): 121 rows" in migrated.stdout, migrated.stdout
    assert "autoembed_cutover notes.Note.embedding" in migrated.stdout
    assert shadow_done(db) == 0  # nothing spent yet

    early = manage(live_site, "autoembed_cutover", "notes.Note.embedding")
    assert early.returncode == 1 and "jobs of the shadow are queued" in early.stderr, early.stderr

    api.latency = 0.1
    worker = popen(live_site, "process_embeddings", "--poll-interval=0.2", "--visibility-timeout=3")
    try:
        wait_for(lambda: shadow_done(db) >= 20, 60, "part of the backfill")
    finally:
        worker.kill()  # SIGKILL: no goodbye, its jobs come back when their timeout ends
        worker.communicate(timeout=30)
    assert 20 <= shadow_done(db) < 121
    assert search_first(live_site).startswith("['Bread'")
    status = ok(manage(live_site, "autoembed_status"), "status").stdout
    assert "model change notes.Note.embedding" in status and "filling" in status, status
    assert "held: `python manage.py autoembed_cutover notes.Note.embedding`" in status, status

    api.latency = 0.0
    resumed = popen(live_site, "process_embeddings", "--poll-interval=0.2")
    try:  # the killed worker's jobs show again after their 3 s
        wait_for(lambda: shadow_done(db) == 121, 120, "the backfill, resumed")
        wait_for(lambda: not sql(db, "select 1 from pgmq.q_embedding_jobs"), 60, "no job left")
    finally:
        resumed.send_signal(signal.SIGINT)
        resumed_out = resumed.communicate(timeout=60)[0]
    assert "Traceback" not in resumed_out, resumed_out
    assert change_row(db)[:3] == (True, False, False)  # held: complete, not cut over

    compared = ok(
        manage(live_site, "autoembed_compare", "notes.Note.embedding", "notes.Note.embedding_next"),
        "autoembed_compare",
    )
    assert "rows with vectors: 121 and 121 of 121" in compared.stdout, compared.stdout
    assert "overlap@10" in compared.stdout

    # Killed after it moved searches to the new vectors, before it swapped the columns.
    cutover = popen(live_site, "autoembed_cutover", "notes.Note.embedding")
    try:
        wait_for(lambda: change_row(db)[1], 60, "the switch")
    finally:
        cutover.kill()
        cutover.communicate(timeout=30)
    assert change_row(db)[1:3] == (True, False)
    assert search_first(live_site).startswith("['Bread'")  # from the new vectors now

    done = ok(manage(live_site, "autoembed_cutover", "notes.Note.embedding"), "the cutover")
    assert "cut over to openai text-embedding-3-large" in done.stdout, done.stdout
    assert change_row(db)[2]
    assert search_first(live_site).startswith("['Bread'")
    stored = vectors(db)
    for title, (body, vector) in stored.items():
        np.testing.assert_allclose(
            vector, fake_vector(f"{title}\n\n{body}", 1536, LARGE), atol=2e-3, err_msg=title
        )
    again = manage(live_site, "autoembed_cutover", "notes.Note.embedding")
    assert again.returncode == 1 and "was cut over already" in again.stderr


def test_reversing_the_migration_abandons_the_change_with_nothing_lost(
    live_site, fresh_database, api
):
    db = fresh_database["name"]
    before = vectors(db)
    declare(live_site, model=LARGE, dimensions=1024)
    ok(manage(live_site, "makemigrations"), "makemigrations")
    ok(manage(live_site, "migrate"), "migrate")
    ok(manage(live_site, "process_embeddings", "--once"), "a part of the change")
    assert shadow_done(db) == 121

    ok(manage(live_site, "migrate", "notes", "0001"), "migrate back")
    (live_site / "notes" / "migrations" / "0002_change_note_embedding.py").unlink()
    (live_site / "notes" / "models.py").write_text(NOTES_MODEL)
    after = vectors(db)
    assert after.keys() == before.keys()
    for title, (_, vector) in before.items():
        np.testing.assert_array_equal(after[title][1], vector)
    columns = sql(
        db,
        "select count(*) from pg_attribute where attrelid = 'notes_note'::regclass "
        "and attname in ('embedding_next', 'embedding_previous') and not attisdropped",
    )
    assert columns == [(0,)]
    assert change_row(db) is None
    assert sql(db, "select config, model from django_autoembed_embeddingidentity") == [
        ("notes.Note.embedding", "text-embedding-3-small")
    ]
    assert search_first(live_site).startswith("['Bread'")
    ok(manage(live_site, "check", "--database", "default"), "check --database")
    ok(manage(live_site, "makemigrations", "--check", "--dry-run"), "no migration to write")


def test_a_change_of_text_alone_is_embedded_again_beside_the_live_vectors(
    live_site, fresh_database, api
):
    """New fields are new vectors by the same model: the same flow, and a live edit made
    during it is embedded from the new text in both columns."""
    db = fresh_database["name"]
    settings = live_site / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nAUTOEMBED["CHANGE_NOTICE"] = 0\n')
    declare(live_site, template="# {title}\n{body}")
    made = ok(manage(live_site, "makemigrations"), "makemigrations")
    assert "Change the embedding of Note.embedding" in made.stdout, made.stdout
    ok(manage(live_site, "migrate"), "migrate")
    assert change_row(db) == (True, False, False, "text-embedding-3-small")
    ok(
        manage(
            live_site,
            "shell",
            "-c",
            "from notes.models import Note; Note.objects.filter(title='Bread').update(body='rye')",
        ),
        "edit",
    )
    ok(manage(live_site, "process_embeddings", "--once"), "fill")
    ok(manage(live_site, "autoembed_cutover", "notes.Note.embedding"), "cutover")
    for title, (body, vector) in vectors(db).items():
        np.testing.assert_allclose(
            vector,
            fake_vector(f"# {title}\n{body}", 1536, "text-embedding-3-small"),
            atol=2e-3,
            err_msg=title,
        )
    ok(manage(live_site, "check", "--database", "default"), "check --database")
