"""autoembed.process_embeddings, the push path's tick, tick by tick.

The embedded Postgres has no pg_net, so here ``net`` is a stand-in with pg_net's two
objects this app touches: ``net.http_post`` records each POST instead of sending it,
and ``net._http_response`` holds the answers a test writes. The real pg_net, pg_cron
and endpoint are exercised in tests/test_push_path.py.
"""

import json

import pytest
from django.db import connection

from tests.helpers import queue_messages
from tests.testapp.models import Document


@pytest.fixture
def net():
    with connection.cursor() as cursor:
        cursor.execute("""
            create schema net;
            create table net.posts (id bigserial primary key, body jsonb, timeout int);
            create table net._http_response (
                id bigint, status_code int, headers jsonb, content text, error_msg text,
                created timestamptz default now());
            create function net.http_post(
                url text, body jsonb, params jsonb default '{}', headers jsonb default '{}',
                timeout_milliseconds int default 5000
            ) returns bigint language sql as $$
                insert into net.posts (body, timeout) values (body, timeout_milliseconds)
                returning id
            $$;
            insert into autoembed.settings values ('endpoint_url', 'http://127.0.0.1:9/e'),
                                                  ('endpoint_token', 't')
                on conflict (key) do update set value = excluded.value;
        """)
    yield
    with connection.cursor() as cursor:
        cursor.execute("drop schema net cascade; delete from autoembed.push_requests")


# What the cron command passes when AUTOEMBED says nothing of the push path's sizes.
DEFAULT_SIZES = {
    "rows_per_post": 500,
    "max_posts": 4,
    "max_body_bytes": 900_000,
    "timeout_milliseconds": 30_000,
    "split_packed": False,
    "keep_responses": "10 minutes",
}


def tick(function: str = "process_embeddings", **sizes) -> int:
    sizes = {**DEFAULT_SIZES, **sizes}
    args = ", ".join(f"{k} => %s" for k in sizes)
    with connection.cursor() as cursor:
        cursor.execute(f"select autoembed.{function}({args})", list(sizes.values()))
        return cursor.fetchone()[0]


def posts() -> list[list[dict]]:
    with connection.cursor() as cursor:
        cursor.execute("select body from net.posts order by id")
        return [b if isinstance(b, list) else json.loads(b) for (b,) in cursor.fetchall()]


def queue_state() -> dict[int, tuple[int, bool]]:
    """msg_id -> (read_ct, hidden)."""
    with connection.cursor() as cursor:
        cursor.execute("select msg_id, read_ct, vt > clock_timestamp() from pgmq.q_embedding_jobs")
        return {m: (r, h) for m, r, h in cursor.fetchall()}


def rows_in(body: list[dict]) -> int:
    return sum(len(job["ids"]) if "ids" in job else 1 for job in body)


def insert_packed(statements: int, per_statement: int) -> None:
    for s in range(statements):
        Document.objects.bulk_create([Document(title=f"s{s} r{i}") for i in range(per_statement)])


def test_packed_messages_travel_whole_and_nothing_is_hidden_without_being_posted(net):
    insert_packed(5, 300)  # five packed messages of 300 rows
    # The budget is 1,000 rows: four messages start below it; two never share a 500-row POST.
    assert tick(rows_per_post=500, max_posts=2) == 1200
    sent = posts()
    assert [rows_in(b) for b in sent] == [300, 300, 300, 300]
    posted = {job["jobId"] for body in sent for job in body}
    state = queue_state()
    assert len(posted) == 4
    for msg_id, (read_ct, hidden) in state.items():
        # a message is read (and hidden) only if it was posted
        assert (read_ct, hidden) == ((1, True) if msg_id in posted else (0, False))
    assert all("ids" in job and "jobId" in job for body in sent for job in body)


def test_several_ticks_post_every_row_once(net):
    insert_packed(4, 500)
    ticks = [tick(rows_per_post=500, max_posts=1) for _ in range(5)]
    assert ticks == [500, 500, 500, 500, 0]
    assert sorted(job["jobId"] for body in posts() for job in body) == sorted(queue_state())


def test_bodies_stay_under_the_byte_limit(net):
    Document.objects.bulk_create([Document(title=f"one {i}") for i in range(1)])
    for i in range(30):
        Document.objects.create(title=f"single {i}")
    tick(rows_per_post=1000, max_posts=5, max_body_bytes=1500)
    sizes = [len(json.dumps(b)) for b in posts()]
    assert len(sizes) > 1 and max(sizes) <= 1500 + 400  # one job may cross the line it starts below


def test_the_guides_shape_splits_packed_messages_within_the_budget(net):
    insert_packed(3, 20)
    assert tick(rows_per_post=10, max_posts=2, split_packed=True) == 20
    sent = posts()
    assert [len(b) for b in sent] == [10, 10] and all("id" in job for b in sent for job in b)
    # the other two packed messages, past the budget, were neither split nor hidden
    untouched = [m for m in queue_messages() if "ids" in m]
    assert [len(m["ids"]) for m in untouched] == [20, 20]
    assert sum(1 for r, hidden in queue_state().values() if hidden) == 20


def test_a_post_that_never_reached_the_endpoint_hands_its_jobs_back_unspent(net):
    insert_packed(2, 100)
    tick(rows_per_post=100, max_posts=2)
    with connection.cursor() as cursor:
        cursor.execute("select id from net.posts order by id")
        first, second = [r[0] for r in cursor.fetchall()]
        # pg_net's answers: a timeout (no status), and one the endpoint gave (its header)
        cursor.execute(
            "insert into net._http_response (id, status_code, headers, error_msg) values "
            "(%s, null, null, 'Timeout of 30000 ms reached'), (%s, 200, %s, null)",
            [first, second, json.dumps({"X-Completed-Jobs": "1"})],
        )
    jobs = {post[0]["jobId"] for post in posts()}
    tick(rows_per_post=100, max_posts=0)  # settles the answers, posts nothing new
    state = queue_state()
    lost, answered = posts()[0][0]["jobId"], posts()[1][0]["jobId"]
    assert state[lost] == (0, False)  # back, visible, the read not counted
    assert state[answered] == (1, True)  # the endpoint has it; not touched here
    assert jobs == {lost, answered}


def test_a_cron_job_scheduled_before_the_stable_name_keeps_working(net):
    """Migration 0010 named the cron's function process_embeddings; a job scheduled earlier
    names process_embeddings_v2, which now hands over to it."""
    Document.objects.bulk_create([Document(title=f"old schedule {i}") for i in range(3)])
    assert tick("process_embeddings_v2") == 3
    assert len(posts()) == 1
