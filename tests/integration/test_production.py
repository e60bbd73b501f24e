"""Production setups: a least-privilege role, racing workers, a renamed queue, content functions,
rows locked for long, and a model on a second database."""

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from django.core.management import call_command
from django.db import connection, connections

from django_autoembed.failures import EmbeddingFailure
from django_autoembed.grants import statements
from django_autoembed.status import collect
from django_autoembed.sync import sync
from django_autoembed.worker import Worker, default_options
from tests.helpers import (
    ROOT,
    archived_count,
    assert_fake_vector,
    drain,
    purge_queue,
    queue_messages,
    queued_ids,
    server_connection,
)
from tests.testapp.models import Document, Memo, RemoteDoc

ROLE = "autoembed_app"


# -- a role with grants on its tables only -------------------------------------------


@pytest.fixture
def app_role():
    """A login role that holds DML grants on testapp_document and nothing else; dropped after."""
    with connection.cursor() as cursor:
        cursor.execute(f"drop owned by {ROLE}" if _role_exists() else "select 1")
        cursor.execute(f"drop role if exists {ROLE}")
        cursor.execute(f"create role {ROLE} login password 'app'")
        cursor.execute(f"grant select, insert, update, delete on testapp_document to {ROLE}")
    yield ROLE
    with connection.cursor() as cursor:
        cursor.execute(f"drop owned by {ROLE}")
        cursor.execute(f"drop role {ROLE}")


def _role_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("select count(*) from pg_roles where rolname = %s", [ROLE])
        return bool(cursor.fetchone()[0])


def as_role(dbname: str | None = None):
    import psycopg

    params = {
        k: v
        for k, v in connection.get_connection_params().items()
        if k not in ("cursor_factory", "context")
    }
    return psycopg.connect(
        **{
            **params,
            "user": ROLE,
            "password": "app",
            "dbname": dbname or connection.settings_dict["NAME"],
        },
        autocommit=True,
    )


def manage_as_role(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "AUTOEMBED_TEST_DB": connection.settings_dict["NAME"],
        "AUTOEMBED_TEST_OTHER_DB": connections["other"].settings_dict["NAME"],
        "AUTOEMBED_TEST_DB_USER": ROLE,
        "AUTOEMBED_TEST_DB_PASSWORD": "app",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    env.pop("AUTOEMBED_PUSH_TIER", None)
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_role_with_table_grants_only_writes_every_way_and_its_rows_are_queued(app_role):
    with as_role() as conn:
        conn.execute("insert into testapp_document (title, content, views) values ('one', '', 0)")
        conn.execute(
            "insert into testapp_document (title, content, views) "
            "select 'many ' || i, '', 0 from generate_series(1, 50) i"
        )
        conn.execute("update testapp_document set views = views + 1")  # no text changed
        conn.execute("update testapp_document set content = 'edited' where title = 'one'")
        conn.execute("delete from testapp_document where title = 'many 50'")
    titles = dict(Document.objects.values_list("pk", "title"))
    assert len(titles) == 50
    queued = queued_ids()
    assert set(titles) <= set(queued)
    one = next(pk for pk, t in titles.items() if t == "one")
    assert queued.count(one) == 2  # inserted, then its text changed


def test_a_connection_limit_below_what_the_lanes_need_leaves_fewer_lanes_and_says_why(
    app_role, api
):
    call_command("autoembed_grants", ROLE, "--apply", verbosity=0)
    with as_role() as conn:
        conn.execute(
            "insert into testapp_document (title, content, views) "
            "select 'slot ' || i, '', 0 from generate_series(1, 30) i"
        )
    with connection.cursor() as cursor:  # 3 lanes would hold 6
        cursor.execute(f"alter role {ROLE} connection limit 3")
    worked = manage_as_role(
        "process_embeddings", "--once", "--concurrency", "3", "--max-downtime", "30"
    )
    assert worked.returncode == 0, worked.stderr
    assert "no connection slot" in worked.stderr and "--concurrency" in worked.stderr
    assert "max_connections" in worked.stderr
    for doc in Document.objects.all():
        assert_fake_vector(Document, doc.pk, doc.title)
    assert queued_ids() == []


def test_the_worker_status_checks_and_endpoint_run_as_that_role_with_the_listed_grants(
    app_role, api
):
    with as_role() as conn:
        conn.execute(
            "insert into testapp_document (title, content, views) "
            "select 'role ' || i, '', 0 from generate_series(1, 20) i"
        )
    before = manage_as_role("check", "--database", "default")
    assert before.returncode == 0 and "autoembed.W101" in before.stderr and ROLE in before.stderr
    assert f"autoembed_grants {ROLE} --apply" in before.stderr

    call_command(
        "autoembed_grants", ROLE, "--apply", verbosity=0
    )  # as the owner, as the README says
    checked = manage_as_role("check", "--database", "default")
    assert checked.returncode == 0 and "W101" not in checked.stderr, checked.stderr
    worked = manage_as_role("process_embeddings", "--once")
    assert worked.returncode == 0, worked.stderr
    for doc in Document.objects.all():
        assert_fake_vector(Document, doc.pk, doc.title)
    status = manage_as_role("autoembed_status", "--json")
    assert status.returncode == 0, status.stderr
    [document] = [
        c
        for c in json.loads(status.stdout)["configs"]
        if c["config"] == "testapp.Document.embedding"
    ]
    assert document["rows"] == 20 and document["missing"] == 0

    # the endpoint, served by a process connected as the role
    with as_role() as conn:
        conn.execute("update testapp_document set title = 'served ' || id")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "AUTOEMBED_TEST_DB": connection.settings_dict["NAME"],
        "AUTOEMBED_TEST_DB_USER": ROLE,
        "AUTOEMBED_TEST_DB_PASSWORD": "app",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("select msg_id, message from pgmq.read('embedding_jobs', 60, 100)")
            jobs = [
                {**(json.loads(m) if isinstance(m, str) else m), "jobId": i}
                for i, m in cursor.fetchall()
            ]
        body = json.dumps(jobs).encode()
        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/autoembed/embed/",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": "Bearer test-token"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                    break
            except OSError:
                assert time.monotonic() < deadline, "the endpoint did not answer"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(10)
    assert answer["failedJobs"] == [] and answer["completedJobs"]
    for doc in Document.objects.all():
        assert_fake_vector(Document, doc.pk, doc.title)


# -- racing workers --------------------------------------------------------------------


def test_two_workers_dead_lettering_one_row_both_finish(api, settings):
    """Another worker records the same row's failure meanwhile: an upsert, no IntegrityError."""
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.poison = {"POISON"}
    doc = Document.objects.create(title="POISON row")
    fine = Document.objects.create(title="fine row")
    other = server_connection(connection.settings_dict["NAME"])
    other.execute("begin")
    other.execute(
        'insert into django_autoembed_embeddingfailure (config, "table", object_pk, job, error, '
        "attempts, "
        "first_failed_at, last_failed_at) values ('testapp.Document.embedding', "
        "'testapp_document', %s, "
        "'{}', 'the other worker', 2, now(), now())",
        [str(doc.pk)],
    )
    threading.Timer(0.5, other.execute, ["commit"]).start()
    try:
        drain()  # waits on the other worker's row, then adds to it
    finally:
        time.sleep(0.6)
        other.close()
    failure = EmbeddingFailure.objects.get()
    assert failure.attempts == 3 and "400" in failure.error
    assert archived_count() == 1 and queue_messages() == []
    assert_fake_vector(Document, fine.pk, "fine row")


# -- renaming the queue ------------------------------------------------------------------


def test_renaming_the_queue_moves_the_waiting_jobs(api, settings):
    docs = Document.objects.bulk_create([Document(title=f"waiting {i}") for i in range(30)])
    Document.objects.create(title="single")
    assert len(queue_messages()) == 2
    settings.AUTOEMBED = {**settings.AUTOEMBED, "QUEUE": "renamed_jobs"}
    try:
        said = sync()
        assert any("moved 2 waiting jobs from queue 'embedding_jobs'" in s for s in said), said
        assert queue_messages() == [] and len(queue_messages("renamed_jobs")) == 2
        late = Document.objects.create(title="after the rename")
        assert queued_ids("renamed_jobs")[-1] == late.pk
        drain()
        for doc in [*docs, late]:
            assert_fake_vector(Document, doc.pk, doc.title)
        with connection.cursor() as cursor:
            cursor.execute(
                "select provolatile from pg_proc where oid = 'autoembed.queue_name()'::regprocedure"
            )
            assert cursor.fetchone()[0] == "s"  # stable, not immutable
    finally:
        settings.AUTOEMBED = {**settings.AUTOEMBED, "QUEUE": "embedding_jobs"}
        sync()
        with connection.cursor() as cursor:
            cursor.execute("select pgmq.drop_queue('renamed_jobs')")
            cursor.execute("delete from autoembed.settings where key = 'former_queues'")
    assert Document.objects.create(title="back").pk == queued_ids()[-1]


# -- content functions ---------------------------------------------------------------------


def test_a_function_named_concat_ws_earlier_on_the_search_path_changes_nothing(api):
    with connection.cursor() as cursor:
        cursor.execute("create schema if not exists shadow")
        cursor.execute(
            "create or replace function shadow.concat_ws(sep text, variadic parts text[]) returns "
            "text "
            "language sql immutable as $$ select 'hijacked' $$"
        )
        cursor.execute(
            "create or replace function shadow.concat(variadic parts text[]) returns text "
            "language sql immutable as $$ select 'hijacked' $$"
        )
    try:
        with connection.cursor() as cursor:
            cursor.execute("set search_path = shadow, public, pg_catalog")
        doc = Document.objects.create(title="real title", content="real body")
        Document.objects.filter(pk=doc.pk).update(content="edited body")
        drain(concurrency=1)  # one lane, on this session: it reads with the same search path
        assert_fake_vector(Document, doc.pk, "real title\n\nedited body")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("reset search_path")
            cursor.execute("drop schema shadow cascade")


def test_a_users_content_function_that_names_its_search_path_may_call_helpers(api):
    memo = Memo.objects.create(body="hello")
    Memo.objects.filter(pk=memo.pk).update(body="changed")  # runs the update trigger's comparison
    drain()
    assert_fake_vector(Memo, memo.pk, "CHANGED!")


def test_a_users_content_function_without_a_search_path_is_refused_by_the_checks():
    from django.core.checks import run_checks

    def errors():
        return [m for m in run_checks(databases=["default"]) if m.id == "autoembed.E109"]

    assert errors() == []
    with connection.cursor() as cursor:
        cursor.execute("alter function memo_text(testapp_memo) reset search_path")
    try:
        [error] = errors()
        assert "memo_text" in error.msg and "SET search_path" in error.hint
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "alter function memo_text(testapp_memo) set search_path = public, pg_catalog"
            )


def test_a_writer_cannot_borrow_the_owners_rights_through_the_triggers(app_role):
    """A role that may create functions in public overloads a built-in the triggers call."""
    with connection.cursor() as cursor:
        cursor.execute("create table if not exists trojan_log (who text)")
        cursor.execute(f"grant insert on trojan_log to {ROLE}")
        cursor.execute(f"grant create on schema public to {ROLE}")
    try:
        with as_role() as conn:
            conn.execute(
                "create function public.to_jsonb(bigint) returns jsonb language plpgsql as $$ "
                "begin insert into trojan_log values (current_user); return "
                "pg_catalog.to_jsonb($1::text); end $$"
            )
            conn.execute("insert into testapp_document (title, content, views) values ('t', '', 0)")
            conn.execute("update testapp_document set title = title || '!'")
        with connection.cursor() as cursor:
            cursor.execute("select count(*) from trojan_log")
            assert cursor.fetchone()[0] == 0  # the overload never ran, as anyone
            cursor.execute("select rolsuper from pg_roles where rolname = %s", [ROLE])
            assert cursor.fetchone()[0] is False
        assert len(queued_ids()) == 2
    finally:
        with connection.cursor() as cursor:
            cursor.execute("drop function if exists public.to_jsonb(bigint)")
            cursor.execute("drop table trojan_log")
            cursor.execute(f"revoke create on schema public from {ROLE}")


def test_only_tables_with_our_triggers_can_be_queued(app_role):
    """Even by a role granted queue_ids (the worker's, for --backfill)."""
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute(
            "grant execute on function autoembed.queue_ids(jsonb[], text, text, text, text) "
            f"to {ROLE}"
        )
    with (
        as_role() as conn,
        pytest.raises(psycopg.errors.RaiseException, match="no embedding declared"),
    ):
        conn.execute(
            "select autoembed.queue_ids(array['1'::jsonb], 'public', 'django_migrations', 'f', 'c')"
        )
    assert queue_messages() == []


def test_no_role_but_the_worker_may_call_queue_ids_and_every_allowed_write_queues(app_role):
    """queue_ids runs as its owner: callable by any role, it let anyone queue paid work."""
    import psycopg

    call = "select autoembed.queue_ids(array['1'::jsonb], 'public', %s, %s, 'embedding')"
    # The backfill's door, its jobs marked with their origin.
    backfill = "select autoembed.queue_ids(array['1'::jsonb], 'public', %s, %s, 'embedding', 'b')"
    for door in (call, backfill):
        with as_role() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(door, ["testapp_document", "testapp_document_embedding_input"])
    assert queued_ids() == []
    with connection.cursor() as cursor:  # writes allowed other ways than a table grant
        cursor.execute(f"revoke all on testapp_document from {ROLE}")
        cursor.execute(f"grant insert (title, content, views) on testapp_document to {ROLE}")
        cursor.execute(f"grant update (title) on testapp_document to {ROLE}")
        cursor.execute(f"grant select (id, title) on testapp_document to {ROLE}")
        cursor.execute(
            "create view app_documents as select id, title, content, views from testapp_document"
        )
        cursor.execute(f"grant insert on app_documents to {ROLE}")
        cursor.execute(
            "create function app_add(t text) returns void language sql security definer "
            "set search_path = public, pg_catalog as "
            "$$ insert into testapp_document (title, content, views) values (t, '', 0) $$"
        )
        cursor.execute(f"grant execute on function app_add(text) to {ROLE}")
    try:
        with as_role() as conn:
            conn.execute("insert into testapp_document (title, content, views) values ('a', '', 0)")
            conn.execute("update testapp_document set title = 'a!' where title = 'a'")
            conn.execute("insert into app_documents (title, content, views) values ('b', '', 0)")
            conn.execute("select app_add('c')")
        assert len(queued_ids()) == 4  # column grants, an UPDATE, a view, a definer function
    finally:
        with connection.cursor() as cursor:
            cursor.execute("drop view app_documents")
            cursor.execute("drop function app_add(text)")
    with connection.cursor() as cursor:  # the worker's role, as autoembed_grants makes it
        for statement in statements(ROLE):
            cursor.execute(statement)
    with as_role() as conn:
        conn.execute(backfill, ["testapp_document", "testapp_document_embedding_input"])
    assert len(queued_ids()) == 5


# -- rows kept locked --------------------------------------------------------------------------


def test_once_leaves_rows_locked_for_long_queued_and_says_so(api):
    doc = Document.objects.create(title="held")
    ok = Document.objects.create(title="free")
    holder = server_connection(connection.settings_dict["NAME"])
    holder.execute("begin")
    holder.execute("select 1 from testapp_document where id = %s for update", [doc.pk])
    try:
        started = time.monotonic()
        worker = Worker(default_options(once=True, lock_wait=1.5))
        assert worker.run() == 0
        assert time.monotonic() - started < 15
        assert worker.left_busy == 1
        assert queued_ids() == [doc.pk]
        assert_fake_vector(Document, ok.pk, "free")
        out = subprocess.run(
            [sys.executable, "-m", "django", "process_embeddings", "--once", "--lock-wait=1"],
            cwd=ROOT,
            env={
                **os.environ,
                "AUTOEMBED_TEST_DB": connection.settings_dict["NAME"],
                "PYTHONPATH": str(ROOT),
                "DJANGO_SETTINGS_MODULE": "tests.settings",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "Left 1 rows queued" in out.stderr, out.stderr
    finally:
        holder.close()
    drain()
    assert_fake_vector(Document, doc.pk, "held")


# -- a second database ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_a_model_on_another_database_works_end_to_end(api, settings, live_server):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    api.poison = {"POISON"}
    with connections["other"].cursor() as cursor:
        cursor.execute("select pgmq.purge_queue('embedding_jobs')")
    docs = RemoteDoc.objects.bulk_create(
        [RemoteDoc(title=f"remote {i}") for i in range(5)] + [RemoteDoc(title="POISON remote")]
    )
    assert queue_messages() == []  # the other database's triggers fill its own queue
    Worker(default_options(once=True, using="other")).run()
    for doc in docs[:-1]:
        assert_fake_vector(RemoteDoc, doc.pk, doc.title)
    assert EmbeddingFailure.objects.using("other").get().object_pk == str(docs[-1].pk)
    assert not EmbeddingFailure.objects.using("default").exists()

    [remote] = [c for c in collect("other").configs if c.config == "testapp.RemoteDoc.embedding"]
    assert remote.rows == 6 and remote.embedded == 5
    assert all(c.config != "testapp.RemoteDoc.embedding" for c in collect("default").configs)

    # the endpoint routes the other database's jobs to it
    RemoteDoc.objects.filter(pk=docs[0].pk).update(title="remote renamed")
    with connections["other"].cursor() as cursor:
        cursor.execute("select msg_id, message from pgmq.read('embedding_jobs', 60, 10)")
        jobs = [
            {**(json.loads(m) if isinstance(m, str) else m), "jobId": i}
            for i, m in cursor.fetchall()
        ]
    request = urllib.request.Request(
        live_server.url + "/autoembed/embed/",
        data=json.dumps(jobs).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer test-token"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["failedJobs"] == []
    assert_fake_vector(RemoteDoc, docs[0].pk, "remote renamed")

    from django.core.checks import run_checks

    assert [
        m.id for m in run_checks(databases=["default", "other"]) if m.id.startswith("autoembed")
    ] == []


def test_a_content_function_that_fails_for_one_row_fails_that_row_alone(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    with connection.cursor() as cursor:
        cursor.execute(
            "create or replace function shout(t text) returns text language plpgsql immutable as "
            "$$ "
            "begin if t = 'boom' then raise exception 'cannot shout that'; end if; "
            "return upper(t) || '!'; end $$"
        )
    try:
        bad = Memo.objects.create(body="boom")
        good = Memo.objects.create(body="fine")
        doc = Document.objects.create(title="unrelated")
        worker = drain()
        assert worker.exit_reason is None
        assert_fake_vector(Memo, good.pk, "FINE!")
        assert_fake_vector(Document, doc.pk, "unrelated")
        failure = EmbeddingFailure.objects.get(object_pk=str(bad.pk))
        assert "content function memo_text failed for this row" in failure.error
        assert "cannot shout that" in failure.error
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "create or replace function shout(t text) returns text language sql immutable as "
                "$$ select upper(t) || '!' $$"
            )


def test_jobs_left_in_the_old_queue_after_a_rename_are_moved_by_the_next_sync(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "QUEUE": "renamed_jobs"}
    try:
        sync()
        # an old worker, still on the old settings, puts a job back into the old queue
        with connection.cursor() as cursor:
            cursor.execute(
                "select pgmq.send('embedding_jobs', %s::jsonb)",
                [
                    json.dumps(
                        {
                            "id": 1,
                            "schema": "public",
                            "table": "testapp_document",
                            "contentFunction": "testapp_document_embedding_input",
                            "embeddingColumn": "embedding",
                        }
                    )
                ],
            )
        assert collect().former_queues == {"embedding_jobs": 1}
        said = sync()
        assert any("moved 1 waiting jobs from queue 'embedding_jobs'" in line for line in said)
        assert queue_messages() == [] and len(queue_messages("renamed_jobs")) == 1
        assert collect().former_queues == {}
    finally:
        settings.AUTOEMBED = {**settings.AUTOEMBED, "QUEUE": "embedding_jobs"}
        sync()
        purge_queue()
        with connection.cursor() as cursor:
            cursor.execute("select pgmq.drop_queue('renamed_jobs')")
            cursor.execute("delete from autoembed.settings where key = 'former_queues'")


def test_a_pause_another_process_records_is_cleared_by_the_next_success_here(api, monkeypatch):
    from django_autoembed import pauses, providers
    from django_autoembed.declarations import registry

    monkeypatch.setattr(pauses, "CLEAR_EVERY", 0.0)  # no waiting out the interval in a test
    label = providers.pause_key(registry.get("testapp.Document.embedding"))
    Document.objects.create(title="first")
    drain()  # this process saw the provider answer
    pauses.ProviderPause.objects.create(provider=label, error="misconfigured: seen elsewhere")
    assert collect().paused
    Document.objects.create(title="second")
    drain()
    assert collect().paused == []


def test_once_says_what_it_left_waiting_for_a_retry(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "RETRY_BACKOFF": 30}
    docs = Document.objects.bulk_create([Document(title=f"retried {n}") for n in range(20)])
    api.fail_next(1, status=500)  # one request of two: the other's rows are embedded
    err = io.StringIO()
    call_command("process_embeddings", "--once", "--batch-size=10", verbosity=0, stderr=err)
    assert len([d for d in docs if Document.objects.get(pk=d.pk).embedding is not None]) == 10
    assert "Left 1 jobs queued: they wait for a retry after a failure" in err.getvalue()
