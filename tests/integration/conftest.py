"""The integration tier: everything that runs on the database, the queue and the fake API.

Every test here gets the database (transactional: triggers, NOTIFY and the worker's own
connections see what it commits), unless it marks its own database access (other
databases, or a non-transactional test), and an empty queue before and after it."""

import subprocess
import sys
import textwrap

import pytest

NOTES_MODEL = """
from django.db import models

from django_autoembed import EmbeddingMixin


class Note(EmbeddingMixin, models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()

    embed_fields = ["title", "body"]
    embed_text_search = "english"  # a stored tsvector and its GIN index: nothing else to install
"""


def pytest_collection_modifyitems(config, items):
    here = config.rootpath / "tests" / "integration"
    for item in items:
        if here in item.path.parents and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture(autouse=True)
def _queue_emptied_around_each_test(request):
    request.getfixturevalue("empty_queue")


@pytest.fixture
def startproject(tmp_path, fresh_database, api):
    """A project made by startproject + startapp, with one line added to INSTALLED_APPS."""
    project = tmp_path / "site"
    project.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(project)], check=True
    )
    subprocess.run([sys.executable, "manage.py", "startapp", "notes"], cwd=project, check=True)
    (project / "notes" / "models.py").write_text(NOTES_MODEL)
    db = fresh_database["settings"]
    settings = project / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + textwrap.dedent(f"""
        INSTALLED_APPS += ["notes", "django_autoembed"]
        DATABASES = {{"default": {{
            "ENGINE": "django.db.backends.postgresql",
            "NAME": {db["NAME"]!r}, "USER": {db["USER"]!r},
            "PASSWORD": {db.get("PASSWORD") or ""!r}, "HOST": {db.get("HOST") or ""!r},
            "PORT": {str(db.get("PORT") or "")!r},
        }}}}
        AUTOEMBED = {{"API_KEY": "sk-test", "BASE_URL": {api.base_url!r}}}
    """)
    )
    return project
