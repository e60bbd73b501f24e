"""Operations: status numbers, database checks against broken states, failures admin and retry."""

import io
import json
import re
import time

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings

from django_autoembed import dbchecks
from django_autoembed.admin import EmbeddingFilter
from django_autoembed.checks import check_endpoint
from django_autoembed.declarations import registry
from django_autoembed.models import EmbeddingFailure
from django_autoembed.triggers import EmbeddingTrigger
from tests.helpers import drain, purge_queue, queue_messages
from tests.testapp.models import Article, Document

DOC = "testapp.Document.embedding"


def status_json(*args):
    out = io.StringIO()
    call_command("autoembed_status", "--json", *args, stdout=out)
    data = json.loads(out.getvalue())
    return data, {c["config"]: c for c in data["configs"]}


@pytest.fixture
def failing_rows(api, settings):
    """10 embedded rows, 2 dead-lettered, 3 queued."""
    purge_queue()
    EmbeddingFailure.objects.all().delete()
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.poison = {"POISON"}
    good = Document.objects.bulk_create([Document(title=f"ok {i}") for i in range(10)])
    bad = Document.objects.bulk_create([Document(title=f"POISON {i}") for i in range(2)])
    drain()
    api.poison = set()
    waiting = Document.objects.bulk_create([Document(title=f"later {i}") for i in range(3)])
    yield good, bad, waiting
    purge_queue()


@pytest.mark.django_db(transaction=True)
def test_status_numbers_match_a_prepared_state(failing_rows):
    data, configs = status_json()
    doc = configs[DOC]
    assert (doc["rows"], doc["embedded"], doc["missing"], doc["queued_rows"], doc["failures"]) == (
        15,
        10,
        5,
        3,
        2,
    )
    assert doc["oldest_job_age_s"] is not None and data["queue_depth"] == 1
    assert data["push"]["pg_cron"] is False and data["lagging"] is False
    human = io.StringIO()
    call_command("autoembed_status", stdout=human)
    line = next(x for x in human.getvalue().splitlines() if x.startswith(DOC))
    assert line.split()[2:6] == ["15", "10", "5", "3"]


@pytest.mark.django_db(transaction=True)
def test_status_samples_large_tables_instead_of_counting_them_in_full(api, monkeypatch):
    from django.test.utils import CaptureQueriesContext

    from django_autoembed import status
    from tests.testapp.models import Manual

    purge_queue()
    monkeypatch.setattr(status, "EXACT_BELOW", 2000)  # "large", at a size a test can afford
    monkeypatch.setattr(status, "SAMPLE_ROWS", 500)
    Document.objects.bulk_create([Document(title=f"sampled {i}") for i in range(4000)])
    drain()
    purge_queue()
    Document.objects.filter(pk__in=Document.objects.order_by("pk").values("pk")[:1000]).update(
        embedding=None
    )
    Manual.objects.bulk_create([Manual(title=f"small {i}") for i in range(5)])
    with connection.cursor() as cursor:
        cursor.execute("analyze testapp_document")
    with CaptureQueriesContext(connection) as queries:
        sampled = {c.config: c for c in status.collect().configs}
    doc, manual = sampled[DOC], sampled["testapp.Manual.embedding"]
    assert doc.estimated and not manual.estimated  # a small table is still counted exactly
    assert doc.rows == 4000 and abs(doc.embedded - 3000) < 400 and manual.rows == 5
    statements = [q["sql"].lower() for q in queries]
    assert not any(
        "count(" in q and 'testapp_document"' in q and "tablesample" not in q for q in statements
    )
    exact = {c.config: c for c in status.collect(exact=True).configs}[DOC]
    assert (exact.estimated, exact.rows, exact.embedded, exact.missing) == (False, 4000, 3000, 1000)
    human = io.StringIO()
    call_command("autoembed_status", stdout=human)
    line = next(x for x in human.getvalue().splitlines() if x.startswith(DOC))
    assert line.split()[2].startswith("~")
    purge_queue()


@pytest.mark.django_db(transaction=True)
def test_fail_on_lag_exits_non_zero_only_when_the_oldest_job_is_too_old(failing_rows):
    time.sleep(1.2)
    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "autoembed_status", "--fail-on-lag", "1", stdout=io.StringIO(), stderr=io.StringIO()
        )
    assert exit_info.value.code == 3
    call_command("autoembed_status", "--fail-on-lag", "3600", stdout=io.StringIO())  # no exit
    drain()
    call_command("autoembed_status", "--fail-on-lag", "0", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_a_backfills_dead_letter_is_retried_as_the_backfills(api, settings):
    """Retried, a row the backfill queued stays the backfill's: the Batch API may take it,
    and it is no write's lag."""
    from django_autoembed.backfill import backfill
    from django_autoembed.status import collect

    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.poison = {"POISON b"}
    Document.objects.create(title="POISON b")
    purge_queue()
    EmbeddingFailure.objects.all().delete()
    assert backfill(registry.get(DOC)) == 1
    drain()
    assert EmbeddingFailure.objects.count() == 1
    call_command("autoembed_retry", "--config", DOC, stdout=io.StringIO())
    [message] = queue_messages()
    assert message["origin"] == "backfill"
    assert collect().oldest_write_age_s is None
    purge_queue()


@pytest.mark.django_db(transaction=True)
def test_retry_command_gets_failed_rows_embedded_by_the_next_run(failing_rows, api):
    _, bad, _ = failing_rows
    assert EmbeddingFailure.objects.count() == 2
    out = io.StringIO()
    call_command("autoembed_retry", "--config", DOC, stdout=out)
    assert "Queued 2 rows again" in out.getvalue()
    assert EmbeddingFailure.objects.count() == 0
    drain()
    assert Document.objects.filter(pk__in=[b.pk for b in bad], embedding__isnull=False).count() == 2
    assert queue_messages() == []


@pytest.mark.django_db(transaction=True)
def test_retry_gets_a_chunked_configs_failed_rows_embedded(api, settings):
    from tests.testapp.models import Manual, ManualChunk

    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.poison = {"POISON"}
    manual = Manual.objects.create(title="POISON", body="a body")
    drain()
    assert EmbeddingFailure.objects.filter(config="testapp.Manual.embedding").count() == 1
    api.poison = set()
    call_command("autoembed_retry", "--config", "testapp.Manual.embedding", stdout=io.StringIO())
    drain()
    assert ManualChunk.objects.filter(parent=manual).exists()
    assert not EmbeddingFailure.objects.exists() and queue_messages() == []


@pytest.mark.django_db(transaction=True)
def test_a_failed_row_embedded_after_an_edit_is_failing_no_more(failing_rows):
    """Status counts the rows still failing: one whose text was fixed and embedded is not."""
    _, bad, _ = failing_rows
    Document.objects.filter(pk=bad[0].pk).update(title="fixed")  # the trigger queues it
    drain()
    assert list(EmbeddingFailure.objects.values_list("object_pk", flat=True)) == [str(bad[1].pk)]
    _, configs = status_json("--config", DOC)
    assert configs[DOC]["failures"] == 1


@pytest.mark.django_db(transaction=True)
def test_admin_lists_failures_and_retry_and_discard_actions_work(failing_rows, client):
    _, _bad, _ = failing_rows
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    page = client.get("/admin/django_autoembed/embeddingfailure/").content.decode()
    assert "input rejected" in page and DOC in page
    first, second = EmbeddingFailure.objects.order_by("object_pk")
    response = client.post(
        "/admin/django_autoembed/embeddingfailure/",
        {"action": "retry_selected", "_selected_action": [first.pk]},
        follow=True,
    )
    assert "Queued 1 rows again" in response.content.decode()
    client.post(
        "/admin/django_autoembed/embeddingfailure/",
        {"action": "discard_selected", "_selected_action": [second.pk]},
    )
    assert not EmbeddingFailure.objects.exists()
    drain()
    assert Document.objects.get(pk=first.object_pk).embedding is not None
    assert Document.objects.get(pk=second.object_pk).embedding is None


@pytest.mark.django_db(transaction=True)
def test_embedding_list_filter(failing_rows, rf):
    from django.contrib.admin import ModelAdmin, site

    model_admin = ModelAdmin(Document, site)
    request = rf.get("/")
    for value, expected in (("present", 10), ("missing", 5)):
        f = EmbeddingFilter(request, {"embedding": [value]}, Document, model_admin)
        assert f.queryset(request, Document.objects.all()).count() == expected
    body = EmbeddingFilter.for_config("body")
    article = Article.objects.create(title="t", body="b")
    drain()
    f = body(request, {"embedding_body": ["present"]}, Article, ModelAdmin(Article, site))
    assert list(f.queryset(request, Article.objects.all())) == [article]


@pytest.mark.django_db(transaction=True)
def test_chunk_counts_and_the_list_filter_on_a_chunked_config(api, rf):
    from django.contrib.admin import ModelAdmin, site

    from django_autoembed.admin import chunk_count
    from tests.helpers import prose
    from tests.testapp.models import Manual

    long, short = (Manual.objects.create(title=t, body=prose(n)) for t, n in (("l", 12), ("s", 1)))
    drain()
    waiting = Manual.objects.create(title="not embedded yet", body=prose(3))
    column = chunk_count()
    assert column(long) > column(short) == 1 and column(waiting) == 0
    assert column.short_description == "chunks"
    model_admin = ModelAdmin(Manual, site)
    request = rf.get("/")
    for value, expected in (("present", {long.pk, short.pk}), ("missing", {waiting.pk})):
        f = EmbeddingFilter(request, {"embedding": [value]}, Manual, model_admin)
        assert set(f.queryset(request, Manual.objects.all()).values_list("pk", flat=True)) == (
            expected
        )


# -- database checks: silent on the migrated database, each fires on a broken one --------------


def db_errors():
    return [(m.id, m.msg) for m in dbchecks.check_database(databases=["default"])]


def broken(statement):
    """Errors seen while ``statement`` is applied; rolled back afterwards (DDL is transactional)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)
        errors = db_errors()
        transaction.set_rollback(True)
    return errors


def doc_trigger(suffix):
    return next(
        n
        for k, n in EmbeddingTrigger.for_config(registry.get(DOC)).trigger_names().items()
        if k.startswith(suffix)
    )


@pytest.mark.django_db
def test_database_checks_are_silent_on_a_migrated_database():
    assert db_errors() == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("statement", "check_id", "fragment"),
    [
        (
            "drop trigger {upd} on testapp_document",
            "autoembed.E106",
            "_upd on testapp_document is missing",
        ),
        (
            "alter table testapp_document disable trigger {ins}",
            "autoembed.E106",
            "_ins on testapp_document is disabled",
        ),
        (
            "comment on trigger {ins} on testapp_document is 'edited'",
            "autoembed.E106",
            "differs from the declaration",
        ),
        (
            "create or replace function testapp_document_embedding_input(r testapp_document) "
            "returns text "
            "language sql as $$ select r.title $$",
            "autoembed.E106",
            "function testapp_document_embedding_input",
        ),
        (
            "alter table testapp_document drop column embedding cascade",
            "autoembed.E107",
            "is missing",
        ),
        (
            "alter table testapp_document alter column embedding type halfvec(768) using null",
            "autoembed.E105",
            "is halfvec(768), but the declaration embeds 1536",
        ),
        (
            "select pgmq.drop_queue('embedding_jobs')",
            "autoembed.E103",
            "queue 'embedding_jobs' does not exist",
        ),
        (
            "alter table testapp_manual_embedding_chunks "
            "drop constraint testapp_manual_embedding_chunks_parent_number_uniq",
            "autoembed.W102",
            "has no unique (parent_id, number) constraint",
        ),
        ("drop schema pgmq cascade", "autoembed.E102", "pgmq is not installed"),
        ("drop extension vector cascade", "autoembed.E101", "pgvector is not installed"),
    ],
)
def test_each_database_check_fires_on_a_broken_database(statement, check_id, fragment):
    errors = broken(statement.format(upd=doc_trigger("update"), ins=doc_trigger("insert")))
    assert any(i == check_id and fragment in msg for i, msg in errors), errors


def test_database_checks_run_only_with_the_database_flag():
    assert dbchecks.check_database() == []


@override_settings(AUTOEMBED={"ENDPOINT_TOKEN": None, "API_KEY": "k"})
def test_endpoint_routed_without_a_token_is_a_warning():
    [warning] = check_endpoint()
    assert warning.id == "autoembed.W003" and "/autoembed/embed/" in warning.msg


def test_endpoint_with_a_token_is_fine():
    assert check_endpoint() == []


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        (
            "BATCH_SIZ",
            10,
            "AUTOEMBED['BATCH_SIZ'] is not a setting of django-autoembed. Did you "
            "mean 'BATCH_SIZE'?",
        ),
        (
            "BATCH_SIZE",
            "100",
            "AUTOEMBED['BATCH_SIZE'] = '100' is a str; it takes int (default 100)",
        ),
        ("RATE_LIMIT_HEADERS", 1, "it takes bool"),
        ("INDEX_DEFER_ROWS", 2.5, "it takes int or None"),
    ],
)
def test_a_wrong_autoembed_key_or_type_is_an_error_naming_it(settings, key, value, said):
    from django_autoembed import settings as autoembed_settings
    from django_autoembed.checks import check_settings
    from django_autoembed.exceptions import ConfigurationError

    assert check_settings() == []
    settings.AUTOEMBED = {**settings.AUTOEMBED, key: value}
    [error] = check_settings()
    assert error.id == "autoembed.E013" and said in error.msg, error.msg
    with pytest.raises(ConfigurationError, match=re.escape(said)):
        autoembed_settings.current()


def test_openai_without_an_api_key_is_a_warning(settings, monkeypatch):
    from django_autoembed.checks import check_settings

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings.AUTOEMBED = {**settings.AUTOEMBED, "API_KEY": None}
    [warning] = check_settings()
    assert warning.id == "autoembed.W002" and "OPENAI_API_KEY" in warning.hint


def test_an_endpoint_time_budget_not_below_pg_nets_timeout_is_a_warning(settings):
    from django_autoembed.checks import check_settings

    settings.AUTOEMBED = {**settings.AUTOEMBED, "ENDPOINT_TIME_BUDGET": 30, "PUSH_TIMEOUT": 30}
    [warning] = check_settings()
    assert warning.id == "autoembed.W004" and "below PUSH_TIMEOUT" in warning.hint
    settings.AUTOEMBED = {**settings.AUTOEMBED, "ENDPOINT_TIME_BUDGET": 25}
    assert check_settings() == []
