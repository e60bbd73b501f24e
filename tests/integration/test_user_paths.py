"""The front door, walked as a user walks it: manage.py as subprocesses on a brand-new database.

pytest-django migrates through call_command, which skips system checks, on a
database it made itself; these tests do neither. tox runs them under every
supported Django.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from django_autoembed.testing import fake_vector
from tests.helpers import ROOT, manage, server_connection
from tests.integration.conftest import NOTES_MODEL


def vectors(
    dbname: str, table: str, query: str = "select title, embedding::text from {} order by id"
) -> dict:
    with server_connection(dbname) as conn:
        rows = conn.execute(query.format(table)).fetchall()
    return {
        title: None if text is None else np.array(json.loads(text), dtype=np.float32)
        for title, text in rows
    }


def assert_clean(result, what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"
    for stream in (result.stdout, result.stderr):
        assert "WARNING" not in stream.upper(), f"{what} warned:\n{stream}"


def add_a_document_and_embed_it(env: dict, dbname: str) -> dict:
    """One document made in ``manage.py shell``, then ``process_embeddings --once``: the
    table's vectors by title."""
    created = manage(
        ROOT,
        "shell",
        "-c",
        "from example_project.documents.models import Document; "
        "Document.objects.create(title='Vector databases', content='pgvector')",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    worked = manage(ROOT, "process_embeddings", "--once", env=env)
    assert_clean(worked, "process_embeddings --once")
    # The example stores its documents in chunks; a short one is one chunk, its whole text.
    return vectors(
        dbname,
        "documents_document",
        "select d.title, c.embedding::text from {} d left join"
        " documents_document_embedding_chunks c on c.parent_id = d.id order by d.id, c.number",
    )


def one_pending_migrations_error(result, *migrations: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("autoembed.E") == 1, result.stderr
    assert "(autoembed.E110)" in result.stderr and "python manage.py migrate" in result.stderr
    for name in migrations:
        assert name in result.stderr, result.stderr


def test_startproject_with_one_installed_apps_line_goes_from_makemigrations_to_vectors(
    startproject, fresh_database
):
    made = manage(startproject, "makemigrations")
    assert_clean(made, "makemigrations")
    assert (startproject / "notes" / "migrations" / "0001_initial.py").exists()

    before = manage(startproject, "check", "--database", "default")
    one_pending_migrations_error(before, "django_autoembed.0001_initial", "notes.0001_initial")

    assert_clean(manage(startproject, "migrate"), "migrate")
    after = manage(startproject, "check", "--database", "default")
    assert_clean(after, "check --database default")
    assert "no issues" in after.stdout

    titles = ["Vector search", "Bread", "Trail running"]
    created = manage(
        startproject,
        "shell",
        "-c",
        "from notes.models import Note; "
        f"Note.objects.bulk_create([Note(title=t, body=t + ' body') for t in {titles!r}])",
    )
    assert created.returncode == 0, created.stderr
    worked = manage(startproject, "process_embeddings", "--once")
    assert_clean(worked, "process_embeddings --once")
    assert "Embedded 3 rows." in worked.stdout
    stored = vectors(fresh_database["name"], "notes_note")
    for title in titles:
        np.testing.assert_allclose(
            stored[title], fake_vector(f"{title}\n\n{title} body", 1536), atol=2e-3
        )
    found = manage(
        startproject,
        "shell",
        "-c",
        "from notes.models import Note; "
        "print([n.title for n in Note.objects.hybrid_search('bread body', k=1)])",
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().splitlines()[-1] == "['Bread']"
    assert_clean(
        manage(startproject, "makemigrations", "--check", "--dry-run"), "makemigrations --check"
    )


def test_a_model_changed_in_the_declaration_is_refused_until_reembedded(
    startproject, fresh_database
):
    """The issue's user: edits ``model=`` in a live config and runs the usual commands."""
    assert_clean(manage(startproject, "makemigrations"), "makemigrations")
    assert_clean(manage(startproject, "migrate"), "migrate")
    notes = "from notes.models import Note; "
    made = manage(
        startproject,
        "shell",
        "-c",
        notes + "Note.objects.bulk_create([Note(title=t, body=t + ' body') for t in "
        "['Vector search', 'Bread', 'Trail running']])",
    )
    assert made.returncode == 0, made.stderr
    assert_clean(manage(startproject, "process_embeddings", "--once"), "process_embeddings")

    models = startproject / "notes" / "models.py"
    models.write_text(
        NOTES_MODEL.replace("import EmbeddingMixin", "import EmbeddingConfig, EmbeddingMixin")
        .replace('    embed_fields = ["title", "body"]\n', "")
        .replace(
            '    embed_text_search = "english"',
            "    embedding_configs = [EmbeddingConfig(fields=['title', 'body'], "
            "text_search='english', model='text-embedding-3-large')]  #",
        )
    )
    fix = "autoembed_reembed notes.Note.embedding"
    checked = manage(startproject, "check", "--database", "default")
    assert checked.returncode == 1 and "autoembed.E111" in checked.stderr
    assert fix in checked.stderr and "text-embedding-3-small" in checked.stderr

    made = manage(startproject, "shell", "-c", notes + "Note.objects.create(title='New', body='b')")
    assert made.returncode == 0, made.stderr
    worked = manage(startproject, "process_embeddings", "--once")
    assert worked.returncode == 2 and fix in worked.stdout + worked.stderr
    searched = manage(
        startproject, "shell", "-c", notes + "print(list(Note.objects.semantic_search('bread')))"
    )
    assert searched.returncode == 1 and "ModelChanged" in searched.stderr
    assert fix in searched.stderr
    status = manage(startproject, "autoembed_status")
    assert status.returncode == 0 and "model changed" in status.stdout

    refused = manage(startproject, *fix.split())  # no terminal to say yes: nothing done
    assert refused.returncode == 1 and "Nothing was changed" in refused.stderr
    moved = manage(startproject, *fix.split(), "--noinput")
    assert moved.returncode == 0, moved.stderr
    assert "Forgot 3 vectors" in moved.stdout and "Queued 4 rows" in moved.stdout
    worked = manage(startproject, "process_embeddings", "--once")
    assert_clean(worked, "process_embeddings after the re-embed")
    # The edit's job, paused before, and the backfill's: one row may be done twice (the
    # second time from the vector store, at no cost).
    stored = vectors(fresh_database["name"], "notes_note")
    assert len(stored) == 4 and all(v is not None for v in stored.values())
    assert_clean(manage(startproject, "check", "--database", "default"), "check --database")
    found = manage(
        startproject,
        "shell",
        "-c",
        notes
        + "print([n.title for n in Note.objects.semantic_search('Bread\\n\\nBread body', k=1)])",
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().splitlines()[-1] == "['Bread']"


def test_example_project_migrates_a_new_database_and_embeds(fresh_database, api):
    env = {
        "DATABASE_URL": fresh_database["url"],
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": api.base_url,
    }
    before = manage(ROOT, "check", "--database", "default", env=env)
    one_pending_migrations_error(before, "django_autoembed.0001_initial", "documents.0001_initial")

    assert_clean(manage(ROOT, "migrate", env=env), "migrate")
    assert_clean(manage(ROOT, "check", env=env), "check")
    checked = manage(ROOT, "check", "--database", "default", env=env)
    assert_clean(checked, "check --database default")
    assert "no issues" in checked.stdout

    stored = add_a_document_and_embed_it(env, fresh_database["name"])
    np.testing.assert_allclose(
        stored["Vector databases"], fake_vector("Vector databases\n\npgvector", 384), atol=2e-3
    )


def test_example_project_runserver_starts_without_warnings(fresh_database, api):
    env = {
        "DATABASE_URL": fresh_database["url"],
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": api.base_url,
        "DJANGO_RUNSERVER_HIDE_WARNING": "true",
    }
    assert manage(ROOT, "migrate", env=env).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "AUTOEMBED_", "OPENAI_")) and k != "DATABASE_URL"
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**base, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    "runserver did not answer"
                )
                time.sleep(0.2)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    assert "System check identified no issues" in output, output
    assert "WARNING" not in output.upper(), output


def test_example_project_with_the_local_model_runs_without_warnings(fresh_database):
    """No OpenAI key: the default a new user meets, the local model from its PyPI package."""
    pytest.importorskip("sentence_transformers", reason="the local extra is not installed here")
    env = {"DATABASE_URL": fresh_database["url"]}
    assert_clean(manage(ROOT, "migrate", env=env), "migrate")
    assert_clean(manage(ROOT, "check", env=env), "check")
    stored = add_a_document_and_embed_it(env, fresh_database["name"])
    assert stored["Vector databases"] is not None and stored["Vector databases"].shape == (384,)
