"""Backfills with the default index: graph maintenance deferred, the index built in bulk after."""

import io
import json
import logging
import re
import time
import zlib

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connection, transaction

from django_autoembed.declarations import registry
from django_autoembed.hnsw.deferral import Indexing, IndexState, state_of
from django_autoembed.hnsw.indexes import managed_index
from django_autoembed.hnsw.sessions import lock_key
from django_autoembed.incidents import Incident
from django_autoembed.providers import PROBE_TEXT
from django_autoembed.status import collect
from django_autoembed.worker import Worker, default_options
from tests.helpers import assert_fake_vector, drain, prose, purge_queue
from tests.testapp.models import Document

CONFIG = "testapp.Document.embedding"


def index_name() -> str:
    index = managed_index(registry.get(CONFIG))
    assert index is not None
    return index.name


def index_valid() -> bool | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "select indisvalid from pg_index where indexrelid = to_regclass(%s)", [index_name()]
        )
        row = cursor.fetchone()
    return row[0] if row else None


def autoembed_errors():
    return [m for m in run_checks(databases=["default"]) if m.id.startswith("autoembed.E")]


@pytest.fixture
def small_threshold(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "INDEX_DEFER_ROWS": 200}


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_a_large_backlog_is_embedded_without_the_index_then_built_in_bulk(
    api, small_threshold, caplog
):
    seen = []

    def look(texts):  # what the index looked like while the backlog was embedded
        if texts == [PROBE_TEXT]:  # the provider's word, asked before the index is dropped
            seen.append("probe")
            return
        with connection.cursor() as cursor:
            cursor.execute("select to_regclass(%s) is not null", [index_name()])
            seen.append((cursor.fetchone()[0], state_of("default", registry.get(CONFIG))))

    api.on_request = look
    docs = Document.objects.bulk_create([Document(title=f"backlog {i}") for i in range(600)])
    with caplog.at_level(logging.INFO, logger="django_autoembed"):
        drain(batch_size=50)
    assert seen[0] == "probe" and set(seen[1:]) == {(False, "deferred")}
    # Vectors stored out of line leave a small heap: the build is given parallel workers anyway.
    (built,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Built")]
    assert re.search(r"with [1-9]\d* parallel workers", built), built
    assert index_valid() is True and not IndexState.objects.exists()
    for doc in docs[::50]:
        assert_fake_vector(Document, doc.pk, doc.title)
    # the migration state still tells the truth, and the database checks agree
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
    assert autoembed_errors() == []
    # and the index serves searches again (a table this small needs a nudge to prefer it)
    query = Document.objects.get(pk=docs[0].pk).embedding
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("set local enable_seqscan = off")
        assert f"Index Scan using {index_name()}" in Document.objects.nearest(query)[:5].explain()


def test_a_backlog_of_long_documents_counts_their_chunks_not_their_rows(api, small_threshold):
    from tests.testapp.models import Manual, ManualChunk

    config = registry.get("testapp.Manual.embedding")
    name = managed_index(config).name
    seen = []

    def look(texts):
        if texts != [PROBE_TEXT]:
            seen.append(state_of("default", config))

    api.on_request = look
    # 30 rows, but ~20 chunks each: 600 vectors to write, over the threshold of 200
    Manual.objects.bulk_create([Manual(title=f"m{i}", body=prose(40, seed=i)) for i in range(30)])
    drain()
    assert ManualChunk.objects.count() >= 400
    assert set(seen) == {"deferred"}
    with connection.cursor() as cursor:
        cursor.execute("select indisvalid from pg_index where indexrelid = to_regclass(%s)", [name])
        assert cursor.fetchone() == (True,)
    assert not IndexState.objects.exists()


def test_small_writes_keep_the_index_up_row_by_row(api, small_threshold):
    Document.objects.bulk_create([Document(title=f"few {i}") for i in range(20)])
    seen = []
    api.on_request = lambda texts: seen.append(index_valid())
    drain()
    assert seen and set(seen) == {True} and not IndexState.objects.exists()


def test_a_backlog_small_next_to_what_the_index_holds_keeps_it(api, small_threshold):
    Document.objects.bulk_create([Document(title=f"held {i}") for i in range(600)])
    drain()  # deferred and built: the index now holds 600 rows
    Document.objects.bulk_create([Document(title=f"more {i}") for i in range(250)])  # < half of 600
    seen = []
    api.on_request = lambda texts: seen.append(index_valid())
    drain()
    assert set(seen) == {True}


def test_search_works_and_status_says_so_while_the_index_is_deferred(api, small_threshold):
    docs = Document.objects.bulk_create([Document(title=f"searchable {i}") for i in range(30)])
    drain()
    indexing = Indexing("default")
    assert indexing.defer(registry.get(CONFIG))
    assert index_valid() is None and state_of("default", registry.get(CONFIG)) == "deferred"
    query = Document.objects.get(pk=docs[3].pk).embedding
    found = list(Document.objects.filter(title__startswith="searchable").nearest(query)[:3])
    assert found[0].pk == docs[3].pk and len(found) == 3  # an exact scan over what is embedded
    assert autoembed_errors() == []  # deferred is no drift
    out = io.StringIO()
    call_command("autoembed_status", "--json", stdout=out)
    [document] = [c for c in json.loads(out.getvalue())["configs"] if c["config"] == CONFIG]
    assert document["index"] == "deferred"
    text = io.StringIO()
    call_command("autoembed_status", stdout=text)
    assert "deferred until the backlog drains" in text.getvalue()

    indexing.finish()  # the queue is empty: built again
    assert index_valid() is True and state_of("default", registry.get(CONFIG)) == "ready"


def test_a_build_that_died_half_way_is_started_afresh(api, small_threshold):
    Document.objects.bulk_create([Document(title=f"crash {i}") for i in range(40)])
    drain()
    IndexState.objects.create(
        config=CONFIG, index=index_name(), table="testapp_document", state="building"
    )
    with connection.cursor() as cursor:  # what a cancelled CREATE INDEX CONCURRENTLY leaves
        cursor.execute(
            "update pg_index set indisvalid = false where indexrelid = to_regclass(%s)",
            [index_name()],
        )
    assert state_of("default", registry.get(CONFIG)) == "building"
    Indexing("default").finish()
    assert index_valid() is True and not IndexState.objects.exists()


def test_an_index_dropped_by_hand_is_reported(api):
    with connection.cursor() as cursor:
        cursor.execute(f'drop index "{index_name()}"')
    try:
        errors = autoembed_errors()
        assert [e.id for e in errors] == ["autoembed.E108"] and index_name() in errors[0].msg
    finally:
        Indexing("default").build(registry.get(CONFIG)) or _recreate()
    assert index_valid() is True


def _recreate():
    index = managed_index(registry.get(CONFIG))
    with connection.schema_editor() as editor:
        editor.add_index(Document, index)


def test_backfilling_a_table_that_already_has_rows_defers_too(api, small_threshold):
    Document.objects.bulk_create([Document(title=f"existing {i}") for i in range(500)])
    purge_queue()  # as if these rows predate the declaration: nothing queued
    seen = []
    api.on_request = lambda texts: texts == [PROBE_TEXT] or seen.append(index_valid())
    call_command("process_embeddings", "--backfill", "--once", verbosity=0)
    assert set(seen) == {None}  # the index was down while the rows were embedded
    assert index_valid() is True and Document.objects.filter(embedding__isnull=True).count() == 0
    [document] = [c for c in collect().configs if c.config == CONFIG]
    assert document.index == "ready"


# -- every label, and failures that are counted ---------------------------------------------


def test_lock_keys_fit_postgres_integers_for_every_label():
    """An unsigned CRC of 2**31 or more travelled as a bigint: pg_try_advisory_lock(int, bigint)
    does not exist, and deferral failed for about half of all model names."""
    labels = ["notes.Note.embedding", "testapp.Note.embedding", "testapp.Document.embedding"]
    labels += [f"app{i}.Model{i * 7919}.embedding" for i in range(5000)]
    crcs = [zlib.crc32(f"autoembed:index:{label}".encode()) for label in labels]
    assert min(crcs) < 2**31 <= max(crcs)  # both sides of the old boundary are covered
    assert all(-(2**31) <= lock_key(label) < 2**31 for label in labels)
    assert len({lock_key(label) for label in labels}) > 4990  # still tells configs apart


@pytest.mark.parametrize(
    ("label", "high"), [("testapp.Document.embedding", False), ("testapp.Note.embedding", True)]
)
def test_a_backlog_defers_the_index_whatever_the_label_hashes_to(
    api, small_threshold, caplog, label, high
):
    from tests.testapp.models import Note

    assert (zlib.crc32(f"autoembed:index:{label}".encode()) >= 2**31) is high
    model = Note if high else Document
    field = "body" if high else "title"
    model.objects.bulk_create([model(**{field: f"label {i}"}) for i in range(600)])
    with caplog.at_level(logging.INFO, logger="django_autoembed"):
        drain(batch_size=50)
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Deferring the HNSW index") and label in m for m in said), said
    assert any(m.startswith("Built the HNSW index") and label in m for m in said), said
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not Incident.objects.exists() and not IndexState.objects.exists()
    assert state_of("default", registry.get(label)) == "ready"


def test_a_failure_to_defer_is_counted_shown_and_said_once(
    api, small_threshold, caplog, monkeypatch
):
    from django_autoembed import sql as sqlfiles

    real = sqlfiles.statement

    def broken(name, key, **names):  # the database refuses the drop (a real error, from Postgres)
        return "select 1 / 0" if key == "drop_index" else real(name, key, **names)

    monkeypatch.setattr(sqlfiles, "statement", broken)
    docs = []
    with caplog.at_level(logging.DEBUG, logger="django_autoembed"):
        for run in range(2):  # two backlogs, two tries to defer: both fail
            docs += Document.objects.bulk_create(
                [Document(title=f"refused {run} {i}") for i in range(600)]
            )
            drain(concurrency=1)
    for doc in docs[::60]:  # embedded all the same, with the index kept up row by row
        assert_fake_vector(Document, doc.pk, doc.title)
    assert index_valid() is True and not IndexState.objects.exists()
    [incident] = Incident.objects.all()
    assert incident.kind == "index_defer" and incident.subject == CONFIG
    assert incident.count == 2 and "division by zero" in incident.error
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "could not defer" in errors[0].getMessage()
    [shown] = collect().incidents
    assert shown["count"] == 2 and shown["subject"] == CONFIG
    out = io.StringIO()
    call_command("autoembed_status", stdout=out)
    assert f"incident: {CONFIG}: 2 times" in out.getvalue()


def test_editing_a_sentence_in_many_long_documents_keeps_the_chunk_index(api, settings):
    """The estimate counts the chunks that will be embedded again, not every chunk of each row."""
    from tests.testapp.models import Manual, ManualChunk

    settings.AUTOEMBED = {**settings.AUTOEMBED, "INDEX_DEFER_ROWS": 50}
    config = registry.get("testapp.Manual.embedding")
    docs = Manual.objects.bulk_create(
        [Manual(title=f"manual {i}", body=prose(40, seed=i)) for i in range(100)]
    )
    drain()
    before = ManualChunk.objects.count()
    assert before >= 1500 and state_of("default", config) == "ready"
    with connection.cursor() as cursor:  # as autovacuum would: the planner's counts are known
        cursor.execute("analyze testapp_manual")
        cursor.execute("analyze testapp_manual_embedding_chunks")
    for doc in docs[:60]:  # one sentence changed near the start of each
        first = doc.body.split(". ")[0]
        doc.body = doc.body.replace(first, f"An edited opening for manual {doc.pk}", 1)
    Manual.objects.bulk_update(docs[:60], ["body"])
    seen = []
    api.on_request = lambda texts: texts == [PROBE_TEXT] or seen.append(state_of("default", config))
    sent = api.inputs
    drain()
    assert seen and set(seen) == {"ready"}  # the index of ~2,000 chunks stayed up
    assert 60 <= api.inputs - sent <= 3 * 60  # a chunk or two of each edited manual
    assert abs(ManualChunk.objects.count() - before) <= 60


def test_a_revoked_key_never_drops_the_index(api, small_threshold):
    api.valid_keys = {"a-key-nobody-has"}
    Document.objects.bulk_create([Document(title=f"unsent {i}") for i in range(600)])
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "401" in worker.exit_reason
    assert index_valid() is True and not IndexState.objects.exists()


def test_a_pause_mid_backlog_builds_the_deferred_index_at_once(api, small_threshold, caplog):
    calls = []

    def revoke_after_a_few(texts):
        calls.append(len(texts))
        if len(calls) == 4:  # the key is revoked while the backlog is being embedded
            api.valid_keys = {"a-key-nobody-has"}

    api.on_request = revoke_after_a_few
    for start in range(0, 600, 50):  # messages of 50 rows: batches of two
        Document.objects.bulk_create([Document(title=f"halfway {start + i}") for i in range(50)])
    with caplog.at_level(logging.INFO, logger="django_autoembed"):
        worker = Worker(default_options(once=True, batch_size=50, max_requests=1, concurrency=1))
        assert worker.run() == 2
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Deferring the HNSW index") for m in said)
    assert any("Building the HNSW index of testapp.Document.embedding again now" in m for m in said)
    assert index_valid() is True and not IndexState.objects.exists()  # searches use it again
    assert 0 < Document.objects.filter(embedding__isnull=False).count() < 600


def test_once_leaving_locked_rows_behind_builds_the_index_it_deferred(api, small_threshold):
    from django_autoembed.db import connect

    Document.objects.bulk_create([Document(title=f"bulk {i}") for i in range(400)])
    late = Document.objects.bulk_create([Document(title=f"late {i}") for i in range(150)])
    blocker = {}

    def lock_the_late_rows(texts):  # an application transaction holds them from now on
        if texts != [PROBE_TEXT] and "conn" not in blocker:
            conn = connect()
            conn.autocommit = False
            conn.execute(
                "select 1 from testapp_document where id = any(%s) for update",
                [[d.pk for d in late]],
            )
            blocker["conn"] = conn

    api.on_request = lock_the_late_rows
    try:
        worker = Worker(default_options(once=True, concurrency=1, lock_wait=2))
        started = time.monotonic()
        assert worker.run() == 0
        # A concurrent build waits for the transaction holding the rows: --lock-wait at most.
        assert time.monotonic() - started < 30 and worker.left_busy == 150
        [incident] = Incident.objects.all()
        assert "could not build" in incident.error
    finally:
        if "conn" in blocker:
            blocker["conn"].rollback()
            blocker["conn"].close()
    drain()  # the next run embeds the rows left behind and builds the index
    assert index_valid() is True and not IndexState.objects.exists()
    assert Document.objects.filter(embedding__isnull=True).count() == 0


def test_a_drop_held_up_by_a_long_transaction_gives_up_and_the_index_comes_back(
    api, small_threshold, settings
):
    from django_autoembed.db import connect

    settings.AUTOEMBED = {**settings.AUTOEMBED, "INDEX_LOCK_TIMEOUT": 1}
    Document.objects.bulk_create([Document(title=f"held {i}") for i in range(600)])
    reader = connect()
    reader.autocommit = False
    reader.execute("select count(*) from testapp_document").fetchone()  # a report, left open
    try:
        worker = Worker(default_options(once=True, concurrency=1, batch_size=50, max_requests=1))
        started = time.monotonic()
        code = worker.run()
        assert time.monotonic() - started < 60
    finally:
        reader.rollback()
        reader.close()
    assert code == 0 and Document.objects.filter(embedding__isnull=True).count() == 0
    incidents = {i.kind: i for i in Incident.objects.all()}
    assert "lock timeout" in incidents["index_defer"].error
    Indexing("default").finish(leaving=True)  # the next run, or tick, once nothing holds it
    assert index_valid() is True and not IndexState.objects.exists()
    assert not Incident.objects.filter(kind="index_build").exists()  # cleared by the build
