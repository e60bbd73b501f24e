"""A model change's edge cases, on the test project's Document: the migration operation is
applied as ``migrate`` applies it (``change_in_place``), the worker and the cutover run in
this process. Each case was a failure a review or the bench found."""

import json
import time

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from django_autoembed import changes
from django_autoembed.exceptions import ModelChanged
from django_autoembed.testing import fake_vector
from tests.helpers import change_in_place, hidden_messages, queue_messages, wait_for
from tests.integration.test_production import ROLE, app_role, manage_as_role  # noqa: F401
from tests.testapp.models import Document

LARGE = "text-embedding-3-large"
TITLES = ["Bread", "Rye", "Spelt", "Barley", "Oats"]


def fetch(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def change_state():
    return fetch(
        "select queued is not null, switched is not null, cut_over is not null, drop "
        "from django_autoembed_embeddingchange"
    )


@pytest.fixture
def changing(api, settings):
    """Five documents embedded by text-embedding-3-small (each model its own vectors), then
    the declaration moved to text-embedding-3-large and its migration applied; undone at
    the end, whatever the test left."""
    api.model_vectors = True
    docs = [Document.objects.create(title=t) for t in TITLES]
    call_command("process_embeddings", once=True)
    old = {**settings.AUTOEMBED}
    settings.AUTOEMBED = {**old, "MODEL": LARGE, "CHANGE_NOTICE": 0}
    change_in_place("testapp", "Document", model=LARGE)
    yield docs, old
    if fetch("select cut_over from django_autoembed_embeddingchange") == [(None,)]:
        change_in_place("testapp", "Document", model=LARGE, backwards=True)
    # Whatever a failed test left of it: the next tests share this table.
    for name in ("ins", "upd"):
        fetch(
            f"drop trigger if exists autoembed_testapp_document_embedding_next_{name} "
            "on testapp_document"
        )
    fetch("drop function if exists testapp_document_embedding_next_input")
    fetch("alter table testapp_document drop column if exists embedding_next")
    fetch("alter table testapp_document drop column if exists embedding_previous")
    changes.forget_all()


def first(text: str) -> str:
    return Document.objects.semantic_search(text, k=1)[0].title


def assert_large(doc):
    stored = np.asarray(Document.objects.get(pk=doc.pk).embedding, dtype=np.float32)
    expected = fake_vector(Document.objects.get(pk=doc.pk).title, 1536, LARGE)
    assert float(np.dot(stored, expected)) == pytest.approx(1.0, abs=1e-2)


def test_old_code_that_slept_through_the_change_is_refused_not_served(changing, settings):
    """A process running the old declaration verified its model just before the change and
    read nothing since: at its next search it learns of the cutover and is refused."""
    _, old = changing
    call_command("process_embeddings", once=True)
    call_command("autoembed_cutover", "testapp.Document.embedding")
    assert first("Bread") == "Bread"
    # That process: the old model verified a moment ago, no change ever read.
    from django_autoembed import identity

    changes.forget_all()
    identity._verified[("default", "testapp.Document.embedding")] = (
        identity.Identity("openai", "text-embedding-3-small", 1536),
        time.monotonic(),
    )
    with settings_as(settings, old), pytest.raises(ModelChanged):
        Document.objects.semantic_search("Bread", k=1)


def settings_as(settings, autoembed):
    from django.test import override_settings

    return override_settings(AUTOEMBED=autoembed)


def test_live_edits_do_not_hold_the_cutover_and_land_in_the_new_column(changing):
    docs, _ = changing
    call_command("process_embeddings", once=True)
    Document.objects.filter(pk=docs[1].pk).update(title="Rye bread")  # both columns' jobs
    call_command("autoembed_cutover", "testapp.Document.embedding")
    assert change_state()[0][2]
    moved = [m for m in queue_messages() if m.get("embeddingColumn") == "embedding"]
    assert moved and not [m for m in queue_messages() if "next" in m.get("embeddingColumn", "")]
    call_command("process_embeddings", once=True)
    for doc in docs:
        assert_large(doc)
    assert first("Rye bread") == "Rye bread"


def test_a_drop_migration_applied_before_the_cutover_drops_the_old_column_at_it(changing):
    call_command("process_embeddings", once=True)
    fetch("update django_autoembed_embeddingchange set drop = true")  # as FinishEmbeddingChange
    call_command("autoembed_cutover", "testapp.Document.embedding")
    assert fetch(
        "select count(*) from pg_attribute where attrelid = 'testapp_document'::regclass "
        "and attname = 'embedding_previous' and not attisdropped"
    ) == [(0,)]
    assert change_state() == []


def test_a_search_built_before_the_cutover_and_read_after_it_reads_the_new_vectors(changing):
    call_command("process_embeddings", once=True)
    changes.forget_all()  # the worker's tick checked it a moment ago
    changes.advance("default", changes.refresh("default", 0)["testapp.Document.embedding"])
    assert change_state()[0][1]  # switched: searches read the new column by its name
    lazy = Document.objects.semantic_search("Spelt", k=3)
    similar = Document.objects.similar_to(Document.objects.get(title="Oats"), k=2)
    call_command("autoembed_cutover", "testapp.Document.embedding")
    assert next(d.title for d in lazy) == "Spelt"
    assert len(list(similar)) == 2


@pytest.mark.parametrize("read", ["rows", "count", "exists"])
def test_a_search_of_the_new_vectors_in_a_transaction_survives_a_cutover_elsewhere(
    changing, monkeypatch, read
):
    """ATOMIC_REQUESTS: a search of the new column, read (or counted, as a Paginator does)
    after another process cut over (renamed it) before this one looked again, fails once
    inside a savepoint and is run again under the new name; the transaction goes on
    (before, it was aborted)."""
    from django.db import transaction

    from tests.helpers import run_command

    call_command("process_embeddings", once=True)
    changes.forget_all()
    changes.advance("default", changes.refresh("default", 0)["testapp.Document.embedding"])
    lazy = Document.objects.semantic_search("Spelt", k=3)
    overrides = {"MODEL": LARGE, "CHANGE_NOTICE": 0}
    monkeypatch.setenv("AUTOEMBED_TEST_OVERRIDES", json.dumps(overrides))
    elsewhere = run_command("autoembed_cutover", "testapp.Document.embedding")
    assert elsewhere.returncode == 0, elsewhere.stderr
    with transaction.atomic():
        Document.objects.create(title="Written in the same transaction")
        if read == "rows":
            assert next(d.title for d in lazy) == "Spelt"
        elif read == "count":
            assert lazy.count() == 3
        else:
            assert lazy.exists()
        assert Document.objects.filter(title__startswith="Written").count() == 1


def test_the_push_paths_nudge_is_no_writes_job(changing):
    """The job a change leaves due to wake the push path says so: it is no write's lag."""
    from django_autoembed.status import collect

    call_command("process_embeddings", once=True)
    changes.forget_all()
    changes.tick("default", nudge=True)
    [nudge] = [m for m in queue_messages() if m.get("origin") == "nudge"]
    assert nudge["embeddingColumn"] == "embedding"
    assert collect().oldest_write_age_s is None


def test_a_search_built_on_the_live_vectors_and_read_after_the_cutover_is_refused(changing):
    """Built before the switch, a search holds a query of the old model; read after the
    cutover, the column it names holds the new model's vectors: refused, not ranked at
    random. Built again, it reads them with a query of the new model."""
    call_command("process_embeddings", once=True)
    stale = Document.objects.semantic_search("Spelt", k=3)
    stale_hybrid = Document.objects.hybrid_search("Spelt", k=3)
    stale_page = stale[:2]  # a clone keeps the mark
    call_command("autoembed_cutover", "testapp.Document.embedding")
    for search in (stale, stale_hybrid, stale_page):
        with pytest.raises(ModelChanged, match="built before the change"):
            list(search)
    assert first("Spelt") == "Spelt"


def test_a_row_the_new_model_refuses_holds_the_cutover_until_told(changing, api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.poison = {"Barley"}
    call_command("process_embeddings", once=True)
    changes.forget_all()  # the worker's tick checked it a moment ago
    change = changes.refresh("default", 0)["testapp.Document.embedding"]
    why = changes.why_waiting("default", change)
    assert why and "1 rows failed in the new column" in why and "--allow-missing" in why
    assert changes.advance("default", change) == why  # the automatic cutover waits
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="failed in the new column"):
        call_command("autoembed_cutover", "testapp.Document.embedding")
    call_command("autoembed_cutover", "testapp.Document.embedding", allow_missing=True)
    assert Document.objects.get(title="Barley").embedding is None
    assert fetch("select config from django_autoembed_embeddingfailure") == [
        ("testapp.Document.embedding",)
    ]


def test_abandoning_the_change_leaves_none_of_its_jobs(changing):
    docs, _ = changing
    Document.objects.filter(pk=docs[0].pk).update(title="Bread loaf")
    assert any(m.get("embeddingColumn") == "embedding_next" for m in queue_messages())
    change_in_place("testapp", "Document", model=LARGE, backwards=True)
    assert not any(m.get("embeddingColumn") == "embedding_next" for m in queue_messages())
    assert change_state() == []


def test_status_shows_the_changes_progress_cost_and_what_the_cutover_waits_for(changing):
    import io
    import json

    def status() -> dict:
        out = io.StringIO()
        call_command("autoembed_status", "--json", stdout=out)
        return json.loads(out.getvalue())

    before = status()
    [change] = before["changes"]
    assert change["phase"] == "filling" and change["left"] == len(TITLES) and change["done"] == 0
    assert change["cost_left_usd"] is not None and "jobs of the shadow" in change["waiting"]
    shadow = next(c for c in before["configs"] if c["config"] == "testapp.Document.embedding_next")
    assert shadow["index"] == "deferred"  # built in bulk once the column is complete
    call_command("process_embeddings", once=True)
    [change] = status()["changes"]
    assert change["done"] == len(TITLES) and change["left"] == 0 and change["tokens"] > 0
    call_command("autoembed_cutover", "testapp.Document.embedding")
    [change] = status()["changes"]
    assert change["phase"] == "cut over" and change["previous"] == "embedding_previous"
    live = next(c for c in status()["configs"] if c["config"] == "testapp.Document.embedding")
    assert live["tokens_30d"] > 0 and live["index"] == "ready"


def test_a_search_reads_the_vectors_its_query_was_made_for_when_the_switch_comes_between(
    changing, monkeypatch
):
    """The switch commits while a search embeds its query (another thread, another process):
    the search still compares its query with the vectors of the model that made it."""
    from django_autoembed.query import query_cache

    call_command("process_embeddings", once=True)
    label = "testapp.Document.embedding"
    embed = query_cache.embed

    def embed_then_switch(cfg, text):
        vector = embed(cfg, text)
        changes.forget_all()
        assert changes.advance("default", changes.refresh("default", 0)[label]) == "switched"
        return vector

    monkeypatch.setattr(query_cache, "embed", embed_then_switch)
    [found] = Document.objects.semantic_search("Bread", k=1)
    assert found.title == "Bread" and found.distance < 0.01
    monkeypatch.setattr(query_cache, "embed", embed)
    [found] = Document.objects.semantic_search("Spelt", k=1)  # the next one reads the new column
    assert found.title == "Spelt" and found.distance < 0.01


def test_the_backfill_is_queued_after_the_migration_commits(api, settings):
    """Queueing every row inside the migration would hold the table's lock that long."""
    from django.db.migrations.executor import MigrationExecutor

    from django_autoembed.change_operations import ChangeEmbedding
    from django_autoembed.triggers import EmbeddingTrigger

    Document.objects.create(title="Bread")
    call_command("process_embeddings", once=True)
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": LARGE}
    state = MigrationExecutor(connection).loader.project_state()
    [old] = [
        c
        for c in state.models["testapp", "document"].options["constraints"]
        if isinstance(c, EmbeddingTrigger)
    ]
    operation = ChangeEmbedding(
        "Document", EmbeddingTrigger(**{**old.deconstruct()[2], "model": LARGE})
    )
    after = state.clone()
    operation.state_forwards("testapp", after)
    try:
        with connection.schema_editor() as editor:
            operation.database_forwards("testapp", editor, state, after)
            assert change_state() == [(False, False, False, False)]
            assert not [m for m in queue_messages() if m["embeddingColumn"] == "embedding_next"]
        assert change_state() == [(True, False, False, False)]
        assert [m for m in queue_messages() if m["embeddingColumn"] == "embedding_next"]
    finally:
        with connection.schema_editor() as editor:
            operation.database_backwards("testapp", editor, after, state)
        changes.forget_all()


def test_a_cutover_a_long_transaction_keeps_from_its_lock_is_counted_and_shown(changing):
    """A report's transaction holds the table: the cutover gives up after a moment, backs
    off, and says so in status (not a warning on every tick); it goes through once free."""
    import io
    import json

    from tests.helpers import server_connection

    call_command("process_embeddings", once=True)
    label = "testapp.Document.embedding"
    changes.forget_all()
    assert changes.advance("default", changes.refresh("default", 0)[label]) == "switched"
    report = server_connection(connection.settings_dict["NAME"])
    report.autocommit = False
    report.execute("select count(*) from testapp_document").fetchone()  # holds the table
    try:
        changes.tick("default")
        change = changes.refresh("default", 0)[label]
        assert change.in_flight and change.failed_tries == 1
        assert "lock timeout" in change.last_error and "tried again in" in change.last_error
        out = io.StringIO()
        call_command("autoembed_status", "--json", stdout=out)
        [entry] = json.loads(out.getvalue())["changes"]
        assert entry["failed_tries"] == 1 and "lock timeout" in entry["last_error"]
        out = io.StringIO()
        call_command("autoembed_status", stdout=out)
        assert "1 failed tries, the last: canceling statement due to lock timeout" in (
            out.getvalue()
        )
    finally:
        report.rollback()
        report.close()
    changes.forget_all()  # this process's back-off
    changes.tick("default")
    assert not changes.refresh("default", 0)[label].in_flight


def test_a_second_change_before_the_first_ones_drop_is_refused_with_the_way_out(changing, settings):
    """The first change's old vectors are where the second's cutover would keep the live
    ones: refused at ``migrate``, with the order that works, rather than a cutover that
    could never rename."""
    from django_autoembed.exceptions import ConfigurationError

    call_command("process_embeddings", once=True)
    call_command("autoembed_cutover", "testapp.Document.embedding")
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": "text-embedding-3-small"}
    with pytest.raises(ConfigurationError, match=r"still in 'embedding_previous'.*drop migration"):
        change_in_place("testapp", "Document", model="text-embedding-3-small")
    columns = fetch(
        "select attname from pg_attribute where attrelid = 'testapp_document'::regclass "
        "and attname like 'embedding%%' and not attisdropped order by attname"
    )
    assert ("embedding_previous",) in columns and ("embedding_next",) not in columns


def test_a_search_of_chunks_built_before_the_cutover_and_read_after_it_reads_the_new_table(
    api, settings
):
    """Chunks: the new chunk table is searched by its own name once switched; a search
    compiled then and read after the cutover renamed the tables reads the same chunks under
    the live name. A row deleted after the cutover takes its chunks with it, though the old
    table still holds some."""
    from tests.testapp.models import Manual

    api.model_vectors = True
    texts = {t: f"{t} body" for t in TITLES}  # one chunk each: "<title>\n\n<body>"
    manuals = [Manual.objects.create(title=t, body=b) for t, b in texts.items()]
    call_command("process_embeddings", once=True)
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": LARGE, "CHANGE_NOTICE": 0}
    label = "testapp.Manual.embedding"
    change_in_place("testapp", "Manual", model=LARGE)
    try:
        call_command("process_embeddings", once=True)
        stale = Manual.objects.semantic_search("Rye\n\nRye body", k=3)  # built before: live
        changes.forget_all()
        assert changes.advance("default", changes.refresh("default", 0)[label]) == "switched"
        lazy = Manual.objects.semantic_search("Spelt\n\nSpelt body", k=3)
        assert "testapp_manual_embedding_next_chunks" in str(lazy.query)
        hybrid = Manual.objects.hybrid_search("Barley\n\nBarley body", k=3)
        assert hybrid[0].title == "Barley"  # read now, from the new chunk table
        hybrid = Manual.objects.hybrid_search("Barley\n\nBarley body", k=3)
        call_command("autoembed_cutover", label)
        assert not changes.refresh("default", 0)[label].in_flight
        found = list(lazy)
        assert found[0].title == "Spelt" and found[0].distance < 0.01
        assert next(iter(hybrid)).title == "Barley"
        with pytest.raises(ModelChanged, match="built before the change"):
            list(stale)
        assert Manual.objects.semantic_search("Oats\n\nOats body", k=1)[0].title == "Oats"
        manuals[0].delete()
        assert fetch(
            "select count(*) from testapp_manual_embedding_chunks where parent_id = %s",
            [manuals[0].pk],
        ) == [(0,)]
    finally:
        fetch("drop table if exists testapp_manual_embedding_chunks_previous")
        fetch("delete from django_autoembed_embeddingchange")
        changes.forget_all()


def test_a_worker_planning_chunks_of_a_table_cut_over_meanwhile_hands_its_jobs_back(
    api, settings, monkeypatch
):
    """Chunks are planned from the new chunk table before the write holds the change: a
    cutover by another process in between ended the worker (UndefinedTable). The jobs are
    handed back now, renamed for the live table by the cutover, and embedded there, with no
    pause of anything."""
    from django_autoembed.pipeline import destinations
    from tests.testapp.models import Manual

    api.model_vectors = True
    manuals = [Manual.objects.create(title=t, body=f"{t} body") for t in TITLES]
    call_command("process_embeddings", once=True)
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": LARGE, "CHANGE_NOTICE": 0}
    label = "testapp.Manual.embedding"
    change_in_place("testapp", "Manual", model=LARGE)
    plan = destinations.chunk_plans

    def cut_over_first(using, target, contents):
        if target.config.shadow_of is not None and monkeypatch_state["armed"]:
            monkeypatch_state["armed"] = False
            call_command("autoembed_cutover", label)  # as another process would, meanwhile
        return plan(using, target, contents)

    monkeypatch_state = {"armed": False}
    monkeypatch.setattr(destinations, "chunk_plans", cut_over_first)
    try:
        call_command("process_embeddings", once=True)  # the backfill
        Manual.objects.filter(pk=manuals[2].pk).update(body="Spelt, edited")
        monkeypatch_state["armed"] = True
        call_command("process_embeddings", once=True)
        assert not monkeypatch_state["armed"]  # the cutover came between
        assert not changes.refresh("default", 0)[label].in_flight
        # Handed back at once, renamed for the live table (no pause, nothing dead): the
        # same run embedded them there.
        assert queue_messages() == []
        assert fetch("select count(*) from django_autoembed_embeddingfailure") == [(0,)]
        [(text, vector)] = fetch(
            "select text, embedding::text from testapp_manual_embedding_chunks "
            "where parent_id = %s",
            [manuals[2].pk],
        )
        assert text.endswith("Spelt, edited")
        stored = np.asarray([float(x) for x in vector.strip("[]").split(",")], dtype=np.float32)
        assert float(np.dot(stored, fake_vector(text, 1536, LARGE))) == pytest.approx(1, abs=1e-2)
    finally:
        fetch("drop table if exists testapp_manual_embedding_chunks_previous")
        fetch("delete from django_autoembed_embeddingchange")
        changes.forget_all()


@pytest.mark.usefixtures("app_role")
def test_a_least_privilege_worker_fills_a_chunked_change_the_owner_cuts_it_over(
    api, settings, monkeypatch
):
    """The order the how-to gives a role with grants on its tables only: `migrate` makes the
    new chunk table, `autoembed_grants` runs again (the check says so until it does), the
    role's worker fills the table, the owner cuts over (it renames tables), and the role
    searches the renamed table."""
    from tests.testapp.models import Manual

    api.model_vectors = True
    for title in TITLES:
        Manual.objects.create(title=title, body=f"{title} body")
    call_command("autoembed_grants", ROLE, "--apply", verbosity=0)
    worked = manage_as_role("process_embeddings", "--once")
    assert worked.returncode == 0, worked.stderr
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": LARGE, "CHANGE_NOTICE": 0}
    monkeypatch.setenv("AUTOEMBED_TEST_OVERRIDES", json.dumps({"MODEL": LARGE, "CHANGE_NOTICE": 0}))
    label, new_table = "testapp.Manual.embedding", "testapp_manual_embedding_next_chunks"
    change_in_place("testapp", "Manual", model=LARGE)
    try:
        checked = manage_as_role("check", "--database", "default")
        assert "autoembed.W101" in checked.stderr and new_table in checked.stderr, checked.stderr
        # Forgotten, the grants pause that config alone: its jobs wait, unspent (before, the
        # worker died with a traceback, a --batch-api one too), and status says what to run.
        early = manage_as_role("process_embeddings", "--once", "--batch-api")
        assert early.returncode == 2 and "autoembed_grants ROLE --apply" in early.stderr
        assert fetch("select read_ct from pgmq.q_embedding_jobs") == [(0,)]
        probe = manage_as_role("autoembed_status", "--json")
        assert probe.returncode == 0, probe.stderr
        status = json.loads(probe.stdout)
        [paused] = status["paused"]
        assert "permission denied for table " + new_table in paused["error"]
        # The probe, as that role, counts what it may read and says what it may not.
        [unread] = [c for c in status["configs"] if c["unreadable"]]
        assert unread["config"] == label + "_next" and "autoembed_grants" in unread["unreadable"]
        assert unread["queued_rows"] == len(TITLES) and "permission denied" in unread["paused"]
        shown = manage_as_role("autoembed_status")
        assert shown.returncode == 0 and f"{label}_next: not counted" in shown.stdout
        call_command("autoembed_grants", ROLE, "--apply", verbosity=0)
        wait_for(lambda: hidden_messages() == 0, timeout=90, message="the pause to end")
        worked = manage_as_role("process_embeddings", "--once")
        assert worked.returncode == 0, worked.stderr
        filled = fetch(f"select text, embedding::text from {new_table}")
        assert len(filled) == len(TITLES)
        for text, vector in filled:
            expected = fake_vector(text, 1536, LARGE)
            assert float(np.dot(np.asarray(json.loads(vector), dtype=np.float32), expected)) > 0.99
        # The role may not rename the owner's tables: the cutover waits for the owner, and
        # its failed tries are counted and said (status shows them).
        again = manage_as_role("process_embeddings", "--once")
        assert again.returncode == 0, again.stderr  # before, it died on the index build
        [(cut_over, tries, error)] = fetch(
            "select cut_over, failed_tries, last_error from django_autoembed_embeddingchange"
        )
        assert cut_over is None and tries > 0, again.stderr
        assert "only the owner of testapp_manual may" in error and "autoembed_cutover" in error
        status = manage_as_role("autoembed_status", "--json")
        [shown] = json.loads(status.stdout)["changes"]
        assert shown["failed_tries"] == tries and shown["last_error"] == error
        refused = manage_as_role("autoembed_cutover", label)
        assert refused.returncode == 1 and "only the owner of testapp_manual may" in refused.stderr
        call_command("autoembed_cutover", label, verbosity=0)
        found = manage_as_role(
            "shell",
            "-c",
            "from tests.testapp.models import Manual; query = 'Spelt\\n\\nSpelt body'; "
            "print([m.title for m in Manual.objects.semantic_search(query, k=1)])",
        )
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip().splitlines()[-1] == "['Spelt']"
    finally:
        fetch("drop table if exists testapp_manual_embedding_chunks_previous")
        if fetch("select cut_over from django_autoembed_embeddingchange") == [(None,)]:
            change_in_place("testapp", "Manual", model=LARGE, backwards=True)
        fetch("delete from django_autoembed_embeddingchange")
        changes.forget_all()


@pytest.mark.usefixtures("app_role")
def test_a_least_privilege_worker_fills_a_new_column_and_says_the_owner_must_cut_over(
    changing, monkeypatch
):
    """A plain config: the role's worker fills the new column, then is refused the index
    build (only the owner may create one): it counts that, says once what to do, and goes
    on working (before, every tick crashed it)."""
    docs, _ = changing
    call_command("autoembed_grants", ROLE, "--apply", verbosity=0)
    overrides = {"MODEL": LARGE, "CHANGE_NOTICE": 0}
    monkeypatch.setenv("AUTOEMBED_TEST_OVERRIDES", json.dumps(overrides))
    worked = manage_as_role("process_embeddings", "--once")  # fills the new column
    assert worked.returncode == 0, worked.stderr
    Document.objects.filter(pk=docs[0].pk).update(title="Wheat")  # work goes on meanwhile
    worked = manage_as_role("process_embeddings", "--once")  # and tries the index
    assert worked.returncode == 0, worked.stderr
    assert worked.stderr.count("only the owner of testapp_document may") == 1, worked.stderr
    [(tries, error)] = fetch(
        "select failed_tries, last_error from django_autoembed_embeddingchange"
    )
    assert tries >= 1 and "autoembed_cutover testapp.Document.embedding" in error
    # Checked before any lock or switch: searches still read the live column.
    assert change_state() == [(True, False, False, False)]
    call_command("autoembed_cutover", "testapp.Document.embedding", verbosity=0)
    for doc in docs:
        assert_large(doc)
    assert first("Wheat") == "Wheat"
