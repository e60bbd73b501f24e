"""A model change of a config stored in chunks, walked as a user walks it: the new vectors
fill a new chunk table beside the live one (the chunking may change with the model), and
the cutover swaps the tables. Searches run throughout in a process of their own, and rows
are edited and deleted during the change."""

import json
import signal
import time

import numpy as np
import pytest

from django_autoembed.testing import fake_vector
from tests.helpers import manage, wait_for
from tests.integration.test_change_flow import (
    LARGE,
    QUERY,
    SEARCHER,
    change_row,
    declare,
    ok,
    popen,
    searches,
    sql,
)

SMALL = "text-embedding-3-small"
CHUNKS = "notes_note_embedding_chunks"
NEW_CHUNKS = "notes_note_embedding_next_chunks"
OLD_CHUNKS = "notes_note_embedding_chunks_previous"
# Long notes: several paragraphs each, so that the chunking decides their chunks.
LONG = {
    f"Long {n}": "\n\n".join(
        f"Paragraph {p} of long note {n} tells of rivers, mills and {n * p} barrels." * 3
        for p in range(6)
    )
    for n in range(8)
}
SHORT = {f"Note {n:03d}": f"Note {n:03d} body" for n in range(60)} | {"Bread": "Bread body"}


def chunks(db: str, table: str = CHUNKS) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Each note's chunks, in order: (text, vector)."""
    rows = sql(
        db,
        f"select n.title, c.text, c.embedding::text from {table} c "
        "join notes_note n on n.id = c.parent_id order by n.id, c.number",
    )
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for title, text, vector in rows:
        out.setdefault(title, []).append((text, np.array(json.loads(vector), dtype=np.float32)))
    return out


def tables(db: str) -> set[str]:
    return {
        name
        for (name,) in sql(
            db, "select relname from pg_class where relname like 'notes_note_embedding%%'"
        )
    }


@pytest.fixture
def chunked_site(startproject, fresh_database, api):
    """The notes site storing its vectors in chunks of 40 tokens, embedded by
    text-embedding-3-small, the fake giving each model its own vectors."""
    api.model_vectors = True
    settings = startproject / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nAUTOEMBED["CHANGE_NOTICE"] = 1\n')
    declare(startproject, chunk_tokens=40, chunk_overlap=8)
    ok(manage(startproject, "makemigrations"), "makemigrations")
    ok(manage(startproject, "migrate"), "migrate")
    notes = {**SHORT, **LONG}
    ok(
        manage(
            startproject,
            "shell",
            "-c",
            "from notes.models import Note; "
            f"Note.objects.bulk_create([Note(title=t, body=b) for t, b in {notes!r}.items()])",
        ),
        "bulk_create",
    )
    ok(manage(startproject, "process_embeddings", "--once"), "process_embeddings")
    return startproject


def test_a_chunked_config_changes_model_and_chunking_with_searches_throughout(
    chunked_site, fresh_database, api
):
    db = fresh_database["name"]
    before = chunks(db)
    assert len(before) == len(SHORT) + len(LONG)
    assert all(len(before[title]) > 2 for title in LONG)  # 40 tokens: several chunks each
    # A web process running the old declaration, until the new one is deployed.
    old_searcher = popen(chunked_site, "shell", "-c", SEARCHER.format(query=QUERY, name="old"))
    searcher = worker = None
    old_out = ""
    try:
        wait_for(lambda: len(searches(chunked_site, "old")) > 5, 60, "searches before the change")

        declare(chunked_site, chunk_tokens=120, chunk_overlap=8, model=LARGE, dimensions=1024)
        made = ok(manage(chunked_site, "makemigrations"), "makemigrations")
        assert f"Change the embedding of Note's chunks ({CHUNKS})" in made.stdout, made.stdout
        migrated = ok(manage(chunked_site, "migrate"), "migrate")
        assert "Embedding every row again" in migrated.stdout, migrated.stdout
        assert change_row(db) == (True, False, False, LARGE)
        assert NEW_CHUNKS in tables(db)
        assert sql(db, f"select count(*) from {NEW_CHUNKS}") == [(0,)]
        for title, stored in chunks(db).items():
            assert [t for t, _ in stored] == [t for t, _ in before[title]], title
        # The deploy restarts the web process with the new declaration.
        searcher = popen(chunked_site, "shell", "-c", SEARCHER.format(query=QUERY, name="new"))
        wait_for(lambda: len(searches(chunked_site)) > 5, 60, "searches by the new code")
        (chunked_site / "stop-old").touch()
        old_out = old_searcher.communicate(timeout=60)[0]

        status = ok(manage(chunked_site, "autoembed_status"), "autoembed_status")
        assert "notes.Note.embedding_next" in status.stdout, status.stdout
        assert "model change notes.Note.embedding" in status.stdout, status.stdout

        worker = popen(chunked_site, "process_embeddings", "--poll-interval=0.2")
        edit = (
            "from notes.models import Note; "
            "Note.objects.filter(title='Note 007').update(body='edited while changing'); "
            "Note.objects.filter(title='Note 008').delete(); "
            "Note.objects.create(title='Note new', body='written while changing')"
        )
        ok(manage(chunked_site, "shell", "-c", edit), "edits during the change")
        before_cutover = len(searches(chunked_site))
        wait_for(lambda: (change_row(db) or (0, 0, 0))[2], 180, "the automatic cutover")
        wait_for(
            lambda: len(searches(chunked_site)) > before_cutover + 100, 60, "searches after it"
        )

        # The live chunk table holds the new model's vectors of the new chunking, each
        # made from its chunk's text; the old one is kept until the drop, with no key.
        after = chunks(db)
        assert "Note 008" not in after and "Note new" in after
        assert after["Note 007"][0][0].endswith("edited while changing")
        for title, stored in after.items():
            for text, vector in stored:
                np.testing.assert_allclose(
                    vector, fake_vector(text, 1024, LARGE), atol=2e-3, err_msg=title
                )
        assert all(len(after[title]) < len(before[title]) for title in LONG)
        assert {OLD_CHUNKS, CHUNKS} <= tables(db) and NEW_CHUNKS not in tables(db)
        old = chunks(db, OLD_CHUNKS)
        assert len(old["Long 0"][0][1]) == 1536
        assert sql(
            db,
            "select count(*) from pg_constraint where contype = 'f' "
            f"and conrelid = '{OLD_CHUNKS}'::regclass",
        ) == [(0,)]
        # A note deleted after the cutover goes, with its chunks, though the old table
        # still holds some of its chunks.
        ok(
            manage(
                chunked_site,
                "shell",
                "-c",
                "from notes.models import Note; Note.objects.filter(title='Long 7').delete()",
            ),
            "a delete after the cutover",
        )
        assert "Long 7" not in chunks(db)
        assert sql(db, "select model, dimensions from django_autoembed_embeddingidentity") == [
            (LARGE, 1024)
        ]

        made = ok(manage(chunked_site, "makemigrations"), "makemigrations (the drop)")
        assert "Drop the old vectors" in made.stdout, made.stdout
        ok(manage(chunked_site, "migrate"), "migrate (the drop)")
        assert OLD_CHUNKS not in tables(db) and NEW_CHUNKS not in tables(db)
        assert change_row(db) is None
        checked = manage(chunked_site, "check", "--database", "default")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        ok(manage(chunked_site, "makemigrations", "--check", "--dry-run"), "nothing to migrate")
        time.sleep(0.5)
    finally:
        (chunked_site / "stop-old").touch()
        (chunked_site / "stop-new").touch()
        worker_out = ""
        if worker is not None:
            worker.send_signal(signal.SIGINT)
            worker_out = worker.communicate(timeout=60)[0]
            print("worker:", worker_out[-5000:])  # shown if the test fails
            print("status:", manage(chunked_site, "autoembed_status").stdout)
        searcher_out = searcher.communicate(timeout=60)[0] if searcher else ""
        old_searcher.wait(timeout=60)
    done = searches(chunked_site, "old") + searches(chunked_site)
    errors = [s["error"] for s in done if "error" in s]
    assert not errors, f"{len(errors)} searches failed, the first:\n{errors[0]}\n{searcher_out}"
    assert "Traceback" not in old_out, old_out
    assert len(done) > 200
    assert all(s["n"] == 5 for s in done), [s for s in done if s["n"] != 5][:3]
    wrong = [s for s in done if s["first"] != "Bread"]
    assert not wrong, f"{len(wrong)} of {len(done)} searches ranked another row first"
    assert "Traceback" not in worker_out, worker_out


def test_reversing_a_chunked_change_drops_the_new_table_and_keeps_the_chunks(
    chunked_site, fresh_database, api
):
    db = fresh_database["name"]
    before = chunks(db)
    declare(chunked_site, chunk_tokens=40, chunk_overlap=8, model=LARGE)
    made = ok(manage(chunked_site, "makemigrations"), "makemigrations")
    migration = next((chunked_site / "notes" / "migrations").glob("0002_*.py"))
    assert "ChangeEmbedding" in migration.read_text(), made.stdout
    ok(manage(chunked_site, "migrate"), "migrate")
    ok(manage(chunked_site, "process_embeddings", "--once"), "a part of the change")
    assert sql(db, f"select count(distinct parent_id) from {NEW_CHUNKS}") == [(len(before),)]

    ok(manage(chunked_site, "migrate", "notes", "0001"), "migrate back")
    migration.unlink()
    declare(chunked_site, chunk_tokens=40, chunk_overlap=8)
    assert NEW_CHUNKS not in tables(db)
    after = chunks(db)
    assert after.keys() == before.keys()
    for title, stored in before.items():
        assert [t for t, _ in after[title]] == [t for t, _ in stored], title
        for (_, old), (_, new) in zip(stored, after[title], strict=True):
            np.testing.assert_array_equal(new, old)
    assert change_row(db) is None
    assert sql(db, "select count(*) from pgmq.q_embedding_jobs") == [(0,)]
    assert sql(db, "select config, model from django_autoembed_embeddingidentity") == [
        ("notes.Note.embedding", SMALL)
    ]
    ok(manage(chunked_site, "check", "--database", "default"), "check --database")
    ok(manage(chunked_site, "makemigrations", "--check", "--dry-run"), "no migration to write")


def test_a_long_model_name_changes_its_chunks_too(startproject, fresh_database, api):
    """``<chunk table>.<column>`` of a 32-character table is longer than a table's name:
    recorded in full, the change goes through (it failed the migration)."""
    db = fresh_database["name"]
    settings = startproject / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nAUTOEMBED["CHANGE_NOTICE"] = 0\n')
    models = startproject / "notes" / "models.py"

    def declare_long(**config) -> None:
        declare(startproject, **config)
        models.write_text(
            models.read_text().replace("class Note(", "class ResearchDocumentAttachment(")
        )

    declare_long(chunk_tokens=40, chunk_overlap=8)
    ok(manage(startproject, "makemigrations"), "makemigrations")
    ok(manage(startproject, "migrate"), "migrate")
    create = (
        "from notes.models import ResearchDocumentAttachment as R; "
        f"R.objects.bulk_create([R(title=t, body=b) for t, b in {LONG!r}.items()])"
    )
    ok(manage(startproject, "shell", "-c", create), "bulk_create")
    ok(manage(startproject, "process_embeddings", "--once"), "process_embeddings")
    declare_long(chunk_tokens=40, chunk_overlap=8, model=LARGE, dimensions=1024)
    ok(manage(startproject, "makemigrations"), "makemigrations")
    ok(manage(startproject, "migrate"), "migrate")
    live = "notes_researchdocumentattachment_embedding_chunks"
    assert sql(db, "select shadow from django_autoembed_embeddingchange") == [
        ("notes_researchdocumentattachment_embedding_next_chunks.embedding",)
    ]
    ok(manage(startproject, "process_embeddings", "--once"), "the fill")
    label = "notes.ResearchDocumentAttachment.embedding"
    ok(manage(startproject, "autoembed_cutover", label, "--wait", "60"), "the cutover")
    assert sql(db, f"select count(*), min(vector_dims(embedding::vector)) from {live}") == [
        (sql(db, f"select count(*) from {live}_previous")[0][0], 1024)
    ]
