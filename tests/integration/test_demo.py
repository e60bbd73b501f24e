"""`make demo` as CI runs it: example_project/demo.py on a brand-new database, twice."""

import os
import re
import subprocess
import sys

from tests.helpers import ROOT, server_connection

# What CI greps the demo's output for: a result line, "  <distance>  <title>".
RESULT_LINE = re.compile(r"^  [0-9.]+  ", re.M)


def demo(env: dict) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "AUTOEMBED_", "OPENAI_")) and k != "DATABASE_URL"
    }
    return subprocess.run(
        [sys.executable, "example_project/demo.py"],
        cwd=ROOT,
        env={**base, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def counts(dbname: str) -> tuple[int, int, int]:
    with server_connection(dbname) as conn:
        return conn.execute(
            "select (select count(*) from documents_document),"
            " (select count(distinct title) from documents_document),"
            " (select count(*) from documents_document_embedding_chunks)"
        ).fetchone()


def test_the_demo_loads_embeds_and_searches_and_a_second_run_adds_nothing(fresh_database, api):
    from example_project.documents.corpus import python_topics

    env = {
        "DATABASE_URL": fresh_database["url"],
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": api.base_url,
    }
    first = demo(env)
    assert first.returncode == 0, first.stdout + first.stderr
    topics = len(python_topics())
    out = first.stdout
    assert f"Loaded {topics} new Python reference topics ({topics} in all)." in out, out
    assert f"{topics} of {topics} documents embedded, in " in out, out
    documents, titles, chunks = counts(fresh_database["name"])
    assert documents == titles == topics and chunks > 2 * topics  # long topics: many chunks
    assert len(RESULT_LINE.findall(out)) == 9, out  # 3 questions, 3 results each
    assert "semantic_search(" in out and "hybrid_search('__slots__')" in out
    # Each result is followed by its best chunk's text.
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if RESULT_LINE.match(line):
            assert lines[i + 1].startswith(" " * 9) and lines[i + 1].strip(), out

    again = demo(env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Loaded 0 new Python reference topics ({topics} in all)." in again.stdout
    assert counts(fresh_database["name"]) == (documents, titles, chunks)
    assert len(RESULT_LINE.findall(again.stdout)) == 9, again.stdout
