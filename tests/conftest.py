"""Shared fixtures: the fake OpenAI server for every test, a clean queue, a brand-new database;
and every test that used the database ends once no index build of a stray backend runs."""

from __future__ import annotations

import os
import time

import pytest
from django.db import connection

from django_autoembed import budget, changes, identity
from django_autoembed.pipeline.embed import recent_vectors
from django_autoembed.query import query_cache
from django_autoembed.testing import FakeEmbeddingsServer
from django_autoembed.usage import discard_queries
from django_autoembed.views import forget_pauses
from tests.helpers import database_url, purge_queue, server_connection

# A server or worker a test started and stopped can leave its backend running a CREATE or
# DROP INDEX CONCURRENTLY (Postgres notices a gone client only when it next talks to it). Such
# a build waits for every older transaction, the flush after a test waits for the build's lock:
# a deadlock. So a test that used the database ends once no other backend is doing that.
INDEX_BUILDS = """
select count(*) from pg_stat_activity
 where datname = current_database() and pid <> pg_backend_pid() and state = 'active'
   and query ~* 'index\\s+concurrently'
"""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if item.get_closest_marker("django_db") is None and "live_server" not in item.fixturenames:
        return
    from django.conf import settings

    from django_autoembed.db import connect

    for alias in settings.DATABASES:
        try:
            conn = connect(alias)
        except Exception:  # a database this run never created
            continue
        with conn:
            deadline = time.monotonic() + 120
            while conn.execute(INDEX_BUILDS).fetchone()[0] and time.monotonic() < deadline:
                time.sleep(0.1)


@pytest.fixture(scope="session")
def fake_api():
    with FakeEmbeddingsServer() as server:
        os.environ["AUTOEMBED_TEST_BASE_URL"] = server.base_url
        yield server


@pytest.fixture(autouse=True)
def api(fake_api, settings):
    """Every test talks to the loopback fake, reset to no latency and no failures."""
    fake_api.reset()
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BASE_URL": fake_api.base_url}
    query_cache.clear()
    recent_vectors.clear()
    budget.forget()  # what this process learned of the fake's limits in an earlier test
    forget_pauses()  # and the endpoint's pauses of an earlier test's providers
    discard_queries()  # and the search queries an earlier test counted
    identity.forget_all()  # and the embedding identities it verified (tables emptied since)
    changes.forget_all()  # and the model changes it read
    return fake_api


@pytest.fixture
def empty_queue():
    """An empty queue and archive before and after the test."""
    purge_queue()
    yield
    purge_queue()


@pytest.fixture
def fresh_database(django_db_blocker):
    """A database made on the test server for this test alone (not pytest-django's); dropped."""
    import uuid

    from psycopg import sql

    name = f"autoembed_fresh_{uuid.uuid4().hex[:10]}"
    with django_db_blocker.unblock():
        with server_connection() as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        settings_dict = dict(connection.settings_dict)
    yield {
        "name": name,
        "url": database_url(settings_dict, name),
        "settings": {**settings_dict, "NAME": name},
    }
    with django_db_blocker.unblock(), server_connection() as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
