"""A changed model, with the old model's vectors stored, is refused loudly: by the worker (that
config alone, nothing spent), by its searches, by `check --database` and in status; and
``autoembed_reembed`` moves it to the new model in place."""

import json
import subprocess
import time
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import connection

from django_autoembed import identity, pauses
from django_autoembed import worker as worker_module
from django_autoembed.backfill import backfill
from django_autoembed.batches import ProviderBatch
from django_autoembed.compare import compare
from django_autoembed.declarations import registry
from django_autoembed.exceptions import ModelChanged, PauseKind
from django_autoembed.failures import EmbeddingFailure
from django_autoembed.identity import EmbeddingIdentity
from django_autoembed.pipeline.run import REFUSED_HAND_BACK, REFUSED_JITTER
from django_autoembed.status import collect
from django_autoembed.testing import fake_vector
from django_autoembed.worker import Worker, default_options
from tests.helpers import (
    drain,
    embedded_pks,
    hidden_messages,
    purge_queue,
    queued_ids,
    start_worker,
    stored_vector,
    wait_for,
)
from tests.integration.test_production import app_role, manage_as_role  # noqa: F401
from tests.testapp.models import Article, Document, Manual, ManualChunk, Note, Quote, Tag

DOC = "testapp.Document.embedding"
LARGE = "text-embedding-3-large"


def recorded(label: str) -> tuple[str, str, int]:
    row = EmbeddingIdentity.objects.get(config=label)
    return row.provider, row.model, row.dimensions


def read_counts() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("select read_ct from pgmq.q_embedding_jobs")
        return {r[0] for r in cursor.fetchall()}


def change_model(settings, model: str = LARGE, **more) -> None:
    """What Document and Manual inherit changes; Quote declares its own model."""
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": model, **more}


def test_a_changed_model_pauses_that_config_alone_and_refuses_its_searches(api, settings):
    docs = Document.objects.bulk_create(
        [Document(title=f"doc {i}", content="old") for i in range(5)]
    )
    Quote.objects.bulk_create([Quote(text=f"quote {i}") for i in range(3)])
    drain()
    assert recorded(DOC) == ("openai", "text-embedding-3-small", 1536)

    change_model(settings)
    Document.objects.filter(pk=docs[0].pk).update(title="edited")
    quote = Quote.objects.create(text="a quote written after the change")
    before = api.requests
    worker = Worker(default_options(once=True))
    assert worker.run() == 2  # --once could not do all the work: it says so
    assert "model changed" in worker.exit_reason
    assert f"autoembed_reembed {DOC}" in worker.exit_reason
    # The config beside it, on another model, went on.
    assert quote.pk in embedded_pks(Quote)
    # The changed one: nothing asked of the provider for it, nothing spent, the old vectors
    # kept, its job still queued.
    assert api.requests - before == 1
    assert queued_ids() == [docs[0].pk] and read_counts() == {0}
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert recorded(DOC)[1] == "text-embedding-3-small"

    with pytest.raises(ModelChanged, match=r"text-embedding-3-small.*text-embedding-3-large"):
        list(Document.objects.semantic_search("doc 1", k=3))
    assert list(Quote.objects.semantic_search("quote 1", k=1))  # its own model: fine

    [status] = collect(configs=[registry.get(DOC)]).configs
    assert status.vectors_by == "openai text-embedding-3-small (1536 dimensions)"
    assert status.model_changed and f"autoembed_reembed {DOC}" in status.model_changed
    assert status.paused and f"autoembed_reembed {DOC}" in status.paused
    out = StringIO()
    call_command("autoembed_status", "--config", DOC, stdout=out)
    assert "model changed" in out.getvalue()
    with pytest.raises(SystemCheckError) as checked:
        call_command("check", "--database", "default")
    assert "autoembed.E111" in str(checked.value) and DOC in str(checked.value)


def hidden_for() -> list[float]:
    """Seconds each queued job stays hidden from every worker."""
    with connection.cursor() as cursor:
        cursor.execute(
            "select greatest(extract(epoch from vt - clock_timestamp()), 0)::float"
            " from pgmq.q_embedding_jobs"
        )
        return [r[0] for r in cursor.fetchall()]


def test_a_refused_declarations_jobs_wait_seconds_for_a_worker_that_can_do_them(
    api, settings, monkeypatch
):
    """In a rolling deploy the worker still running the old declaration stays refused for as
    long as it runs; the jobs it reads are hidden a few seconds only, not for its pause, so
    the worker running the new declaration takes them (CI: a 60 s pause held them past 90 s).
    A job it meets again is hidden as briefly: the old worker may simply have won the race
    for it (hidden for the pause then, it stalled the rolling deploy below)."""
    monkeypatch.setitem(pauses.PAUSE_FIRST, PauseKind.CONFIG, 60.0)
    # One read a run: a slow pass would otherwise wait for the brief hand-back and meet the
    # job again within the run (test_once_with_a_refused_backlog_ends_and_says_so).
    monkeypatch.setattr(worker_module, "ONCE_GRACE_SECONDS", 0.0)
    doc = Document.objects.create(title="doc")
    drain()
    change_model(settings)
    Document.objects.filter(pk=doc.pk).update(title="edited")
    worker = Worker(default_options(once=True))
    worker.pauses.brief_refusals = True  # as a worker that keeps running (not --once) does
    assert worker.run() == 2 and "model changed" in worker.exit_reason
    assert worker.pauses.paused_for(identity.pause_key(registry.get(DOC))) > 50
    brief = REFUSED_HAND_BACK * REFUSED_JITTER
    assert queued_ids() == [doc.pk] and max(hidden_for()) <= brief
    # Read again by the same process while the pause holds: as briefly.
    time.sleep(max(hidden_for()) + 0.05)
    worker.stopping = False
    worker.run()
    assert queued_ids() == [doc.pk] and 0 < max(hidden_for()) <= brief
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": "text-embedding-3-small"}
    time.sleep(max(hidden_for()) + 0.05)
    drain()  # a worker whose declaration matches takes it
    assert not queued_ids()


def test_a_refused_declarations_jobs_show_again_at_scattered_times(api, settings, monkeypatch):
    """Each batch of a refused config's jobs is hidden for a length of its own: hidden for
    one fixed length, they showed again in step with the old worker's polls, which read them
    first, time after time, while the new worker waited (CI: a rolling deploy past 60 s)."""
    monkeypatch.setitem(pauses.PAUSE_FIRST, PauseKind.CONFIG, 60.0)
    monkeypatch.setattr(worker_module, "ONCE_GRACE_SECONDS", 0.0)
    docs = [Document.objects.create(title=f"doc {i}") for i in range(12)]
    drain()
    change_model(settings)
    for doc in docs:  # a message each
        Document.objects.filter(pk=doc.pk).update(title=f"edited {doc.pk}")
    worker = Worker(default_options(once=True, batch_size=1, max_requests=1))  # 2 a read
    worker.pauses.brief_refusals = True  # as a worker that keeps running (not --once) does
    assert worker.run() == 2 and "model changed" in worker.exit_reason
    hidden = hidden_for()
    assert len(hidden) == len(docs) and max(hidden) <= REFUSED_HAND_BACK * REFUSED_JITTER
    assert max(hidden) - min(hidden) > 0.1, hidden


def test_once_with_a_refused_backlog_ends_and_says_so(api, monkeypatch):
    """`--once` beside jobs of a refused config does the rest and exits 2, promptly, however
    long a pass over the refused jobs takes: it does not wait for the jobs it handed back
    (one message a row, one a read: a pass of a few seconds, as a large backlog takes)."""
    docs = Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(100)])
    drain()
    monkeypatch.setenv("AUTOEMBED_TEST_OVERRIDES", json.dumps({"MODEL": LARGE}))
    with connection.cursor() as cursor:
        for doc in docs:  # one statement a row: one message a row
            cursor.execute(
                "update testapp_document set title = 'e' || title where id = %s", [doc.pk]
            )
    Quote.objects.create(text="a quote that can be embedded")
    started = time.monotonic()
    once = start_worker("--once", "--batch-size=1", "--max-requests=1", "--concurrency=1")
    try:
        _, err = once.communicate(timeout=75)
    except subprocess.TimeoutExpired:
        once.kill()
        raise AssertionError("--once did not end beside a refused backlog") from None
    assert once.returncode == 2, err[-2000:]
    assert "model changed" in err and time.monotonic() - started < 60
    assert embedded_pks(Quote) and len(queued_ids()) == 100


def test_autoembed_reembed_moves_the_config_to_the_new_model(api, settings, monkeypatch):
    monkeypatch.setattr(identity, "CLEAR_PAGE", 4)  # six rows: two pages of forgetting
    docs = Document.objects.bulk_create(
        [Document(title=f"doc {i}", content="text") for i in range(6)]
    )
    drain()
    change_model(settings)
    out = StringIO()
    call_command("autoembed_reembed", DOC, "--noinput", stdout=out)
    said = out.getvalue()
    assert "Re-embedding every row" in said and "6 rows" in said
    assert "Forgot 6 vectors" in said and "Queued 6 rows" in said
    assert not embedded_pks(Document)
    assert recorded(DOC)[1] == LARGE
    assert sorted(queued_ids()) == sorted(d.pk for d in docs)  # once each: no trigger fired

    drain()
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert [d.pk for d in Document.objects.semantic_search("doc 2\n\ntext", k=1)] == [docs[2].pk]
    [status] = collect(configs=[registry.get(DOC)]).configs
    assert status.model_changed is None and status.paused is None
    call_command("check", "--database", "default", stdout=StringIO())  # no E111


def test_without_confirmation_autoembed_reembed_changes_nothing(api, settings):
    Document.objects.bulk_create([Document(title=f"doc {i}", content="x") for i in range(3)])
    drain()
    change_model(settings)
    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("autoembed_reembed", DOC, stdout=StringIO())  # no terminal to answer
    assert len(embedded_pks(Document)) == 3 and recorded(DOC)[1] == "text-embedding-3-small"
    with pytest.raises(CommandError, match="No embedding config"):
        call_command("autoembed_reembed", "testapp.Nope.embedding", "--noinput")


def test_new_dimensions_are_reembedded_after_the_column_is_migrated(api, settings):
    Document.objects.bulk_create([Document(title=f"doc {i}", content="x") for i in range(3)])
    drain()
    change_model(settings, DIMENSIONS=768)
    out = StringIO()
    call_command("autoembed_reembed", DOC, "--noinput", stdout=out)
    # The column still holds 1536: rows queued now could not be written; migrate first.
    assert "Its column holds 1536 dimensions and the declaration 768" in out.getvalue()
    assert "run `python manage.py migrate`" in out.getvalue()
    assert not queued_ids() and not embedded_pks(Document)
    assert recorded(DOC)[2] == 768
    # Until the column is migrated, the config waits (no request, no failed write).
    Document.objects.create(title="written before the migration")
    before = api.requests
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "holds vectors of 1536 dimensions" in worker.exit_reason
    assert api.requests == before and not EmbeddingFailure.objects.exists()


def test_a_chunked_config_is_refused_and_restoring_the_declaration_resumes(api, settings):
    manual = Manual.objects.create(title="manual", body="chunked words. " * 200)
    drain()
    label = "testapp.Manual.embedding"
    chunks = ManualChunk.objects.filter(parent=manual)
    count = chunks.count()
    assert count > 1 and recorded(label)[1] == "text-embedding-3-small"

    change_model(settings)
    Manual.objects.filter(pk=manual.pk).update(body="changed words. " * 200)
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "model changed" in worker.exit_reason
    assert chunks.count() == count  # the old chunks stay, none is added
    with pytest.raises(ModelChanged):
        list(Manual.objects.semantic_search("chunked words", k=1))

    change_model(settings, "text-embedding-3-small")  # the declaration restored
    # The job was hidden for the pause (5 s at first); then a worker started afresh takes
    # it, and clears the pause the other left.
    wait_for(lambda: hidden_messages() == 0, timeout=30, message="the paused job visible")
    drain()
    assert not queued_ids()
    assert [m.pk for m in Manual.objects.semantic_search("changed words", k=1)] == [manual.pk]
    [status] = collect(configs=[registry.get(label)]).configs
    assert status.model_changed is None and status.paused is None


def test_a_config_with_no_vector_yet_takes_the_declared_model(api):
    EmbeddingIdentity.objects.create(
        config=DOC, provider="openai", model="text-embedding-ada-002", dimensions=1536
    )
    docs = Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(4)])
    drain()  # nothing stored that another model made: nothing to refuse
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert recorded(DOC) == ("openai", "text-embedding-3-small", 1536)


def test_autoembed_reembed_refuses_a_model_that_did_not_change(api):
    Document.objects.bulk_create([Document(title=f"doc {i}", content="x") for i in range(2)])
    drain()
    with pytest.raises(CommandError, match="nothing to re-embed"):
        call_command("autoembed_reembed", DOC, "--noinput", stdout=StringIO())
    assert len(embedded_pks(Document)) == 2
    out = StringIO()
    call_command("autoembed_reembed", DOC, "--noinput", "--force", stdout=out)
    assert "Queued 2 rows" in out.getvalue()


def test_after_a_reembed_a_process_declaring_the_old_model_writes_nothing(api, settings):
    """A worker not yet restarted in a rolling deploy: the vectors are gone, but the new
    model was pinned, so it cannot take the config back."""
    docs = Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(4)])
    drain()
    change_model(settings)
    call_command("autoembed_reembed", DOC, "--noinput", stdout=StringIO())
    change_model(settings, "text-embedding-3-small")  # the old worker
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "model changed" in worker.exit_reason
    assert not embedded_pks(Document) and recorded(DOC)[1] == LARGE
    change_model(settings)  # the new one
    wait_for(lambda: hidden_messages() == 0, timeout=30, message="the paused jobs visible")
    drain()
    assert embedded_pks(Document) == {d.pk for d in docs} and recorded(DOC)[1] == LARGE


def test_a_write_after_another_process_reembedded_is_refused(api):
    """This process verified the model a moment ago (and trusts that for a while); another
    one re-embeds the config meanwhile: the write is checked again, under a lock."""
    doc = Document.objects.create(title="doc")
    drain()
    with connection.cursor() as cursor:  # what autoembed_reembed did elsewhere
        cursor.execute(
            "update django_autoembed_embeddingidentity set model = %s, pinned = true "
            "where config = %s",
            [LARGE, DOC],
        )
        cursor.execute("update testapp_document set embedding = null")
    Document.objects.filter(pk=doc.pk).update(title="edited")
    before = api.requests
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "model changed" in worker.exit_reason
    assert api.requests == before + 1  # verified lately: asked, and refused at the write
    assert not embedded_pks(Document)  # paid for, but nothing of the old model written
    assert queued_ids() == [doc.pk] and read_counts() == {0}


def test_autoembed_reembed_of_a_chunked_config_replaces_every_chunk(api, settings, monkeypatch):
    monkeypatch.setattr(identity, "CLEAR_PAGE", 3)
    manuals = [
        Manual.objects.create(title=f"manual {i}", body=f"words of manual {i}. " * 150)
        for i in range(2)
    ]
    drain()
    before = set(ManualChunk.objects.values_list("pk", flat=True))
    assert len(before) > 6
    change_model(settings)
    out = StringIO()
    call_command("autoembed_reembed", "testapp.Manual.embedding", "--noinput", stdout=out)
    assert f"Forgot {len(before)} vectors" in out.getvalue() and "Queued 2 rows" in out.getvalue()
    assert not ManualChunk.objects.exists()
    drain()
    after = ManualChunk.objects.all()
    assert after.count() == len(before) and not before & set(after.values_list("pk", flat=True))
    assert {c.parent_id for c in after} == {m.pk for m in manuals}


def test_a_reembed_stopped_half_way_refuses_everything_until_it_is_run_again(api, settings):
    docs = Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(3)])
    drain()
    change_model(settings)
    # What a run stopped after its first transaction leaves: the new model, still clearing.
    config = registry.get(DOC)
    identity.record("default", config, identity.declared(config), pinned=True, clearing=True)
    with pytest.raises(ModelChanged, match="again to finish"):
        list(Document.objects.semantic_search("doc 1", k=1))
    Document.objects.filter(pk=docs[0].pk).update(title="edited")
    worker = Worker(default_options(once=True))
    assert worker.run() == 2 and "autoembed_reembed" in worker.exit_reason
    assert len(embedded_pks(Document)) == 3  # the old vectors: neither mixed nor searched

    out = StringIO()
    call_command("autoembed_reembed", DOC, "--noinput", stdout=out)  # no --force needed
    assert "Forgot 3 vectors" in out.getvalue()
    wait_for(lambda: hidden_messages() == 0, timeout=30, message="the paused job visible")
    drain()
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert list(Document.objects.semantic_search("doc 1", k=1))


@pytest.mark.parametrize("model", [Note, Tag], ids=["uuid key, quoted table", "text key"])
def test_autoembed_reembed_pages_through_any_primary_key(api, settings, monkeypatch, model):
    monkeypatch.setattr(identity, "CLEAR_PAGE", 2)
    if model is Note:
        rows = [Note(body=f"note {i}") for i in range(5)]
    else:
        rows = [Tag(slug=f"tag-{i}", label=f"tag {i}") for i in range(5)]
    model.objects.bulk_create(rows)
    drain()
    label = f"testapp.{model.__name__}.embedding"
    change_model(settings)
    out = StringIO()
    call_command("autoembed_reembed", label, "--noinput", stdout=out)
    assert "Forgot 5 vectors" in out.getvalue() and "Queued 5 rows" in out.getvalue()
    assert not embedded_pks(model)
    drain()
    assert len(embedded_pks(model)) == 5


def test_a_changed_models_backfill_is_not_sent_to_the_batch_api(api, settings):
    Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(3)])
    drain()
    Document.objects.bulk_create([Document(title=f"later {i}") for i in range(4)])
    purge_queue()  # the later rows wait for a backfill, as existing rows do
    change_model(settings)
    assert backfill(registry.get(DOC)) == 4
    before = api.requests
    worker = Worker(default_options(once=True, batch_api=True))
    assert worker.run() == 2 and "model changed" in worker.exit_reason
    assert not ProviderBatch.objects.exists() and api.requests == before  # nothing paid for
    assert len(queued_ids()) == 4


@pytest.mark.usefixtures("app_role")
def test_a_role_that_may_not_read_the_identities_still_searches(api):
    """The application's role holds grants on its own tables only (README, production)."""
    Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(3)])
    drain()
    found = manage_as_role(
        "shell",
        "-c",
        "from tests.testapp.models import Document; "
        "print([d.title for d in Document.objects.semantic_search('doc 1', k=1)])",
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().splitlines()[-1] == "['doc 1']"
    assert "embedding identities cannot be read" in found.stderr  # said, once
    assert found.stderr.count("embedding identities cannot be read") == 1


def test_in_a_rolling_deploy_two_workers_of_two_models_store_one_models_vectors(
    api, settings, monkeypatch
):
    """After `autoembed_reembed`, a worker still running the old declaration and one running
    the new one work side by side, with live edits: every vector stored is the new model's."""
    api.model_vectors = True  # each model its own vectors, as real models
    api.latency = 0.02
    docs = Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(300)])
    drain()
    change_model(settings)
    call_command("autoembed_reembed", DOC, "--noinput", stdout=StringIO())
    workers = []
    for model in ("text-embedding-3-small", LARGE):  # the old worker first
        monkeypatch.setenv("AUTOEMBED_TEST_OVERRIDES", json.dumps({"MODEL": model}))
        workers.append(start_worker("--concurrency=2"))
    stalled = None
    try:
        for round_ in range(5):
            for doc in docs[round_ * 10 : round_ * 10 + 10]:
                Document.objects.filter(pk=doc.pk).update(title=f"edited {round_} {doc.pk}")
            time.sleep(0.3)
        wait_for(
            lambda: not queued_ids() and len(embedded_pks(Document)) == len(docs),
            timeout=60,
            message="every row embedded by the new worker",
        )
    except AssertionError as exc:
        with connection.cursor() as cursor:  # what the database sessions were doing
            cursor.execute(
                "select application_name, state, wait_event_type, wait_event, left(query, 80)"
                " from pg_stat_activity where datname = current_database()"
            )
            stalled = f"{exc}; sessions: {cursor.fetchall()}"
    finally:
        for worker in workers:
            worker.terminate()
        outputs = [worker.communicate(timeout=60) for worker in workers]
    old_log = outputs[0][1]
    assert "model changed" in old_log, old_log[-2000:]
    # What both workers said and the database sessions were doing, to tell why.
    assert not stalled, f"{stalled}; old: {old_log[-1500:]} new: {outputs[1][1][-1500:]}"
    for doc in Document.objects.all():
        np.testing.assert_allclose(
            stored_vector(Document, doc.pk), fake_vector(doc.title, 1536, LARGE), atol=2e-3
        )
    assert recorded(DOC)[1] == LARGE


def test_autoembed_compare_prints_the_overlap_of_two_configs_top_results(api, tmp_path):
    api.vectors = "related"  # texts that share wording lie near each other, as real ones
    words = ["python", "bread", "trail", "garden", "piano", "chess", "sailing", "coffee"]
    Article.objects.bulk_create(
        [Article(title=f"{w} guide {i}", body=f"all about {w}, {i}") for w in words for i in (1, 2)]
    )
    drain()
    title, body = registry.get("testapp.Article.title"), registry.get("testapp.Article.body")
    queries = ["python guide", "baking bread", "a guide to chess", "sailing and coffee"]

    def top(text: str, config: str) -> set:
        return {a.pk for a in Article.objects.semantic_search(text, 3, config=config)}

    expected = sum(len(top(q, "title") & top(q, "body")) / 3 for q in queries) / len(queries)
    result = compare(title, body, queries, k=3)
    assert result.mean == pytest.approx(expected) and 0 < result.mean < 1
    assert result.covered == (16, 16) and result.rows == 16
    itself = compare(title, title, queries, k=3)
    assert itself.mean == 1.0 and itself.same_first == 1.0
    assert compare(title, title, queries, k=50).mean == 1.0  # 16 rows: all of them, alike

    path = tmp_path / "queries.txt"
    path.write_text("\n".join(queries) + "\n\n")
    out = StringIO()
    call_command(
        "autoembed_compare", title.label, body.label, "--queries", str(path), "-k", "3", stdout=out
    )
    assert f"overlap@3: mean {expected:.2f}" in out.getvalue()
    assert "4 queries, top 3 each" in out.getvalue()
    out = StringIO()
    call_command("autoembed_compare", title.label, body.label, "--sample", "5", stdout=out)
    assert "5 queries, top 10 each" in out.getvalue()
    with pytest.raises(CommandError, match="two models"):
        call_command("autoembed_compare", title.label, DOC)
