"""Long documents: exact token counts, texts over the limit, chunks in a child table."""

import io
import json
import logging

import openai
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from pgvector.django import CosineDistance

from django_autoembed.failures import EmbeddingFailure
from django_autoembed.testing import fake_vector
from django_autoembed.testing.fake_openai import MAX_INPUT_TOKENS
from tests.helpers import (
    archived_count,
    assert_fake_vector,
    drain,
    prose,
    queue_messages,
    tokens,
)
from tests.testapp.models import Document, Essay, Manual, ManualChunk


def chunk_texts(manual) -> list[str]:
    return list(
        ManualChunk.objects.filter(parent=manual).order_by("number").values_list("text", flat=True)
    )


# -- exact token counts and the API's limits ------------------------------------------------


def test_the_fake_refuses_what_the_real_api_refuses(api):
    client = openai.OpenAI(api_key="k", base_url=api.base_url, max_retries=0)
    too_long = "word " * (MAX_INPUT_TOKENS + 10)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192 tokens"):
        client.embeddings.create(model="text-embedding-3-small", input=["fine", too_long])
    with pytest.raises(openai.BadRequestError, match="max 300000 tokens per request"):
        client.embeddings.create(model="text-embedding-3-small", input=["word " * 8000] * 40)
    with pytest.raises(openai.BadRequestError, match="at most 2048 inputs"):
        client.embeddings.create(model="text-embedding-3-small", input=["x"] * 2049)
    assert api.refused_for_limits == 3 and api.inputs == 0


def test_a_long_english_text_under_the_limit_is_sent_whole(api):
    text = "Plain English prose, about four bytes a token. " * 650  # ~6,500 tokens, ~30 KB
    assert (
        len(text.encode()) > 24_573 and tokens(text) < MAX_INPUT_TOKENS
    )  # the old estimate cut it
    doc = Document.objects.create(title=text)
    drain()
    assert api.texts == [text] and api.refused_for_limits == 0
    assert_fake_vector(Document, doc.pk, text)


def test_a_text_over_the_limit_is_cut_exactly_at_it_and_the_cut_is_logged(api, caplog):
    text = "ひらがなのぶんしょう。" * 700  # Japanese: ~2.4 bytes a token, ~9,800 tokens, 23 KB
    assert tokens(text) > MAX_INPUT_TOKENS and len(text.encode()) // 3 < MAX_INPUT_TOKENS
    doc = Document.objects.create(title=text)
    with caplog.at_level(logging.WARNING, logger="django_autoembed"):
        drain()
    [sent] = api.texts
    assert tokens(sent) == MAX_INPUT_TOKENS and text.startswith(sent)
    assert api.refused_for_limits == 0 and api.requests == 1
    assert_fake_vector(Document, doc.pk, sent)
    [record] = [r for r in caplog.records if "tokens, over the" in r.getMessage()]
    assert str(doc.pk) in record.getMessage() and str(tokens(text)) in record.getMessage()


def test_too_long_fail_dead_letters_at_once_without_a_request(api):
    essay = Essay.objects.create(body="word " * (MAX_INPUT_TOKENS + 100))
    drain()
    assert api.requests == 0 and queue_messages() == [] and archived_count() == 1
    failure = EmbeddingFailure.objects.get(object_pk=str(essay.pk))
    assert "8192" in failure.error and "chunk_tokens" in failure.error and failure.attempts == 1


def test_requests_are_packed_by_tokens_and_none_is_refused(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_SIZE": 2048}
    docs = Document.objects.bulk_create(
        [Document(title=f"{i} " + "dense text " * 3000) for i in range(60)]  # ~6,000 tokens each
    )
    drain()
    assert api.refused_for_limits == 0 and api.inputs == 60
    assert api.requests >= 2  # 360,000 tokens do not fit one request
    assert Document.objects.filter(embedding__isnull=True).count() == 0 and len(docs) == 60


def test_rate_limits_answered_with_429_and_headers_cost_nothing(api, settings):
    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "MAX_ATTEMPTS": 1,
        "BATCH_SIZE": 5,
        "RETRY_BACKOFF": 0,
    }
    api.rpm = 3
    docs = Document.objects.bulk_create([Document(title=f"limited {i}") for i in range(20)])
    client = openai.OpenAI(api_key="k", base_url=api.base_url, max_retries=0)
    for _ in range(3):
        client.embeddings.create(model="text-embedding-3-small", input=["use up the minute"])
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model="text-embedding-3-small", input=["one more"])
    headers = refused.value.response.headers
    assert int(headers["retry-after"]) > 0 and headers["x-ratelimit-remaining-requests"] == "0"
    api.rpm = None  # the minute has passed
    for _ in range(3):
        drain()
    assert not EmbeddingFailure.objects.exists()
    for doc in docs:
        assert_fake_vector(Document, doc.pk, doc.title)


# -- chunks ----------------------------------------------------------------------------------


def test_a_long_text_is_stored_as_token_bounded_chunks_each_with_its_vector(api):
    manual = Manual.objects.create(title="Village guide", body=prose(40))
    drain()
    texts = chunk_texts(manual)
    assert len(texts) > 10 and all(tokens(t) <= 120 for t in texts)
    assert api.inputs == len(texts) and api.refused_for_limits == 0
    for chunk in ManualChunk.objects.filter(parent=manual):
        assert_fake_vector(ManualChunk, chunk.pk, chunk.text)
    assert "Village guide" in texts[0]
    # consecutive chunks overlap: the next one starts with the end of the one before
    assert texts[1][:40] in texts[0].replace("\n\n", " ")


def test_editing_one_paragraph_re_embeds_only_the_chunks_whose_text_changed(api):
    body = prose(60)
    manual = Manual.objects.create(title="Long guide", body=body)
    drain()
    before = chunk_texts(manual)
    assert len(before) >= 20
    paragraphs = body.split("\n\n")
    paragraphs[30] += " A heron waits by the water."
    api.reset()
    Manual.objects.filter(pk=manual.pk).update(body="\n\n".join(paragraphs))
    drain()
    after = chunk_texts(manual)
    changed = set(after) - set(before)
    assert api.inputs == len(changed) and 1 <= len(changed) <= 2
    assert len(after) == len(before)


def test_chunks_are_replaced_only_while_the_row_still_has_that_text(api):
    manual = Manual.objects.create(title="Racing", body=prose(10))

    def edit_while_embedding(texts):
        if any("Racing" in t for t in texts) and not any("Edited" in t for t in texts):
            Manual.objects.filter(pk=manual.pk).update(title="Edited", body=prose(10, seed=3))

    api.on_request = edit_while_embedding
    drain()
    texts = chunk_texts(manual)
    assert texts and "Edited" in texts[0] and not any("Racing" in t for t in texts)


def test_emptied_and_deleted_rows_lose_their_chunks(api):
    emptied = Manual.objects.create(title="", body=prose(8))
    gone = Manual.objects.create(title="Gone", body=prose(8))
    drain()
    assert chunk_texts(emptied) and chunk_texts(gone)
    Manual.objects.filter(pk=emptied.pk).update(body="")
    gone.delete()
    drain()
    assert ManualChunk.objects.count() == 0 and queue_messages() == []


def test_rows_deleted_in_sql_take_their_chunks_with_them(api):
    """Not only the ORM's collector: a DELETE from psql or another service works too."""
    kept, *gone = [Manual.objects.create(title=f"M{n}", body=prose(8, seed=n)) for n in range(3)]
    drain()
    assert ManualChunk.objects.filter(parent__in=gone).exists()
    with connection.cursor() as cursor:  # one statement, in autocommit: the FK check at commit
        cursor.execute("delete from testapp_manual where id = any(%s)", [[m.pk for m in gone]])
    assert not ManualChunk.objects.filter(parent_id__in=[m.pk for m in gone]).exists()
    assert ManualChunk.objects.filter(parent=kept).count() == len(chunk_texts(kept)) > 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("delete from testapp_manual")
    assert ManualChunk.objects.count() == 0


def test_search_over_chunks_ranks_rows_by_their_best_chunk(api):
    guides = [Manual.objects.create(title=f"Guide {n}", body=prose(12, seed=n)) for n in range(5)]
    drain()
    target = ManualChunk.objects.filter(parent=guides[3]).order_by("number")[2]
    found = list(Manual.objects.semantic_search(target.text, k=3))
    assert found[0].pk == guides[3].pk and found[0].chunk_text == target.text
    assert found[0].chunk_number == 2 and found[0].distance == pytest.approx(0, abs=1e-3)
    assert [f.distance for f in found] == sorted(f.distance for f in found)
    filtered = list(Manual.objects.exclude(pk=guides[3].pk).semantic_search(target.text, k=2))
    assert guides[3].pk not in {f.pk for f in filtered} and len(filtered) == 2
    chunks = list(ManualChunk.objects.semantic_search(target.text, k=1))
    assert chunks[0].pk == target.pk


def test_similar_to_a_chunked_row_finds_the_rows_sharing_its_chunks(api):
    body = prose(12, seed=1)
    original = Manual.objects.create(title="Original", body=body)
    near_copy = Manual.objects.create(title="Original", body=body + "\n\nOne more line.")
    others = [
        Manual.objects.create(title=f"Other {n}", body=prose(12, seed=10 + n)) for n in range(3)
    ]
    unembedded = Manual(title="never saved")
    drain()
    found = list(Manual.objects.similar_to(original, k=3))
    assert found[0].pk == near_copy.pk and original.pk not in {f.pk for f in found}
    assert {f.pk for f in found[1:]} <= {o.pk for o in others}
    assert list(Manual.objects.similar_to(unembedded)) == []


def test_a_message_of_many_long_documents_is_shared_out_in_batches_of_bounded_size(api, caplog):
    # one INSERT: one message naming 30 rows of ~40 chunks each
    Manual.objects.bulk_create([Manual(title=f"m{i}", body=prose(40, seed=i)) for i in range(30)])
    [message] = queue_messages()
    assert len(message["ids"]) == 30
    caplog.set_level(logging.INFO, logger="django_autoembed.worker")
    # a batch holds 10 x 4 x 2 = 80 vectors: about 4 of these rows, not all 30
    drain(batch_size=10, max_requests=4, concurrency=2)
    batches = [r for r in caplog.records if r.getMessage().startswith("Batch:")]
    assert len(batches) >= 6 and max(r.completed for r in batches) <= 5
    assert sum(r.completed for r in batches) == 30
    assert ManualChunk.objects.values("parent").distinct().count() == 30
    distinct_texts = ManualChunk.objects.values("text").distinct().count()
    assert api.inputs == distinct_texts and archived_count() == 0


def in_process_chunks(text: str) -> list[str]:
    from django_autoembed import chunking
    from django_autoembed.tokenizers import cl100k_count, cl100k_head

    return chunking.split(text, size=120, overlap=16, count=cl100k_count, cut=cl100k_head)


def test_a_batch_of_long_documents_is_split_in_other_processes_into_the_same_chunks(
    api, settings, monkeypatch
):
    from django_autoembed import splitpool

    splitpool.shutdown()
    monkeypatch.setattr(splitpool, "MIN_CHARS", 20_000)  # these six make ~100,000 characters
    settings.AUTOEMBED = {**settings.AUTOEMBED, "CHUNK_PROCESSES": 2}
    manuals = [Manual.objects.create(title=f"m{i}", body=prose(25, seed=i)) for i in range(6)]
    try:
        drain()
        pool = splitpool._pool
        assert pool is not None and len(pool._processes) == 2  # the split ran there
        for manual in manuals:
            assert chunk_texts(manual) == in_process_chunks(f"{manual.title}\n\n{manual.body}")
        assert api.inputs == ManualChunk.objects.values("text").distinct().count()
    finally:
        splitpool.shutdown()


def test_a_broken_pool_of_splitting_processes_costs_a_warning_not_the_batch(
    settings, monkeypatch, caplog
):
    import os
    import signal

    from django_autoembed import splitpool
    from django_autoembed.tokenizers import cl100k_count

    splitpool.shutdown()
    monkeypatch.setattr(splitpool, "MIN_CHARS", 0)
    settings.AUTOEMBED = {**settings.AUTOEMBED, "CHUNK_PROCESSES": 2}
    texts = [prose(20, seed=i) for i in range(4)]
    tokenizer = (
        "django_autoembed.tokenizers.cl100k_count",
        "django_autoembed.tokenizers.cl100k_head",
    )

    def split(values):
        return splitpool.split_all(
            values, size=120, overlap=16, tokenizer=tokenizer, here=in_process_chunks
        )

    try:
        assert split(texts) == {t: in_process_chunks(t) for t in texts}
        for pid in list(splitpool._pool._processes):
            os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="django_autoembed.splitpool"):
            assert split(texts[:2]) == {t: in_process_chunks(t) for t in texts[:2]}
        assert "Lower CHUNK_PROCESSES" in caplog.text and splitpool._pool is None
        assert split(texts) == {t: in_process_chunks(t) for t in texts}  # a new pool
        assert splitpool._pool is not None
        assert all(tokens(c) <= 120 for cs in split(texts).values() for c in cs)
        assert cl100k_count("two words") == 2
    finally:
        splitpool.shutdown()


def test_a_pool_shut_down_by_another_lane_costs_nothing(settings, monkeypatch):
    from django_autoembed import splitpool

    splitpool.shutdown()
    monkeypatch.setattr(splitpool, "MIN_CHARS", 0)
    settings.AUTOEMBED = {**settings.AUTOEMBED, "CHUNK_PROCESSES": 2}
    texts = [prose(20, seed=i) for i in range(3)]
    tokenizer = (
        "django_autoembed.tokenizers.cl100k_count",
        "django_autoembed.tokenizers.cl100k_head",
    )

    def split():
        return splitpool.split_all(
            texts, size=120, overlap=16, tokenizer=tokenizer, here=in_process_chunks
        )

    try:
        expected = {t: in_process_chunks(t) for t in texts}
        assert split() == expected
        old = splitpool._pool
        old.shutdown()  # as a resize in another lane does, after this lane took the pool
        assert split() == expected and splitpool._pool is None  # split here, pool forgotten
        assert split() == expected and splitpool._pool not in (None, old)
    finally:
        splitpool.shutdown()


def test_a_provider_that_counts_its_own_way_splits_in_process():
    from django_autoembed.providers.base import Provider
    from django_autoembed.providers.local import LocalProvider
    from django_autoembed.providers.openai import OpenAIProvider

    class Recount(OpenAIProvider):
        def count_tokens(self, text: str) -> int:
            return len(text)

    class Renamed(Recount):
        tokenizer = ("mine.count", "mine.head")

    def made(cls):
        return object.__new__(cls)  # no API key needed to ask how it counts

    assert made(OpenAIProvider).process_tokenizer() == OpenAIProvider.tokenizer
    assert made(Recount).process_tokenizer() is None
    assert made(Renamed).process_tokenizer() == ("mine.count", "mine.head")
    assert Provider(model="", dimensions=1).process_tokenizer() is None
    # Counting by joins is for the tokenizer it was said of, and no other.
    assert made(OpenAIProvider).splits_at_spaces()
    assert not made(Recount).splits_at_spaces() and not made(Renamed).splits_at_spaces()
    patched = made(OpenAIProvider)
    patched.count_tokens = len  # type: ignore[method-assign]
    assert patched.process_tokenizer() is None and not patched.splits_at_spaces()
    assert not LocalProvider.joins_at_spaces


def test_status_counts_chunks(api):
    Manual.objects.create(title="Counted", body=prose(12))
    drain()
    out = io.StringIO()
    call_command("autoembed_status", "--json", stdout=out)
    [manual] = [
        c
        for c in json.loads(out.getvalue())["configs"]
        if c["config"] == "testapp.Manual.embedding"
    ]
    assert manual["chunks"] == ManualChunk.objects.count() > 1 and manual["embedded"] == 1


def test_a_custom_splitter_by_dotted_path(api, settings):
    from dataclasses import replace

    from django_autoembed.declarations import registry

    config = registry.get("testapp.Manual.embedding")
    registry.add(replace(config, splitter="tests.testapp.providers.split_on_pipes"))
    try:
        manual = Manual.objects.create(title="a|b", body="c|d|e")
        drain()
        assert chunk_texts(manual) == ["a", "b\n\nc", "d", "e"]
    finally:
        registry.add(config)


def test_a_custom_splitter_that_fails_fails_only_its_rows_and_says_which(api, settings):
    from dataclasses import replace

    from django_autoembed.declarations import registry

    settings.AUTOEMBED = {**settings.AUTOEMBED, "MAX_ATTEMPTS": 1}
    config = registry.get("testapp.Manual.embedding")
    fine = Manual.objects.create(title="x|y", body="z")
    boom = Manual.objects.create(title="first|version", body="ok")
    drain()
    kept = chunk_texts(boom)
    registry.add(replace(config, splitter="tests.testapp.providers.split_or_refuse"))
    try:
        Manual.objects.filter(pk=boom.pk).update(body="boom")
        nul = Manual.objects.create(title="nul", body="here")
        Manual.objects.filter(pk=fine.pk).update(body="w")
        drain()  # the worker neither crashes nor stops: the other row is embedded
    finally:
        registry.add(config)
    assert chunk_texts(fine) == ["x", "y\n\nw"]
    assert chunk_texts(boom) == kept and chunk_texts(nul) == []  # nothing written or dropped
    assert queue_messages() == [] and archived_count() == 2  # the two rows, dead-lettered
    boom_failure = EmbeddingFailure.objects.get(object_pk=str(boom.pk))
    assert "split_or_refuse" in boom_failure.error and "cannot split a boom" in boom_failure.error
    nul_failure = EmbeddingFailure.objects.get(object_pk=str(nul.pk))
    assert "NUL" in nul_failure.error and "Fix it" in nul_failure.error


def test_backfill_queues_the_rows_that_have_no_chunks_yet(api):
    from tests.helpers import purge_queue

    have = Manual.objects.create(title="Chunked already", body=prose(6))
    drain()
    missing = Manual.objects.create(title="Predates the declaration", body=prose(6, seed=2))
    purge_queue()
    out = io.StringIO()
    call_command(
        "process_embeddings",
        "--backfill",
        "--once",
        "--config",
        "testapp.Manual.embedding",
        stdout=out,
        verbosity=1,
    )
    assert "queued 1 rows" in out.getvalue()
    assert chunk_texts(missing) and chunk_texts(have)


# -- two lanes on one row: every chunk stored once -------------------------------------------


def duplicated_chunks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "select count(*) from (select parent_id, number from testapp_manual_embedding_chunks "
            "group by 1, 2 having count(*) > 1) d"
        )
        return cursor.fetchone()[0]


def test_two_lanes_that_meet_on_a_row_store_its_chunks_once(api, settings):
    """Forced interleaving: a second lane writes the row's chunks while the first waits on the
    API with a plan made before they existed."""
    # No rate budget: its first request would hold the second lane's until it is answered.
    settings.AUTOEMBED = {**settings.AUTOEMBED, "RATE_LIMIT_HEADERS": False}
    import threading

    from django.db import connections

    from django_autoembed import queue
    from django_autoembed.pipeline import Processor

    manual = Manual.objects.create(title="twice", body=prose(24, seed=3))
    with connection.cursor() as cursor:  # a second message for the same row (an edit, say)
        cursor.execute("select message from pgmq.q_embedding_jobs")
        body = cursor.fetchone()[0]
        queue.send_batch(cursor, [json.loads(body) if isinstance(body, str) else body])
        messages = queue.read(cursor, 10, 60)
    assert len(messages) == 2
    entered, results = [], []

    def other_lane_meanwhile(texts):
        if entered:
            return
        entered.append(True)

        def run():
            try:
                results.append(Processor().process([messages[1]]))
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)

    api.on_request = other_lane_meanwhile
    first = Processor().process([messages[0]])
    assert [len(r.completed) for r in [*results, first]] == [1, 1]  # both lanes wrote the row
    assert duplicated_chunks() == 0
    numbers = list(
        ManualChunk.objects.filter(parent=manual)
        .order_by("number")
        .values_list("number", flat=True)
    )
    assert numbers == list(range(len(numbers))) and len(numbers) >= 5
    assert len(numbers) == len(set(api.texts))  # one chunk a text sent, none stored twice
    assert queue_messages() == []


def test_three_lanes_after_two_quick_bulk_edits_store_each_chunk_once(api):
    manuals = Manual.objects.bulk_create(
        [Manual(title=f"lanes {i}", body=prose(12, seed=i)) for i in range(100)]
    )
    drain()
    for round_ in range(2):  # two edits before any worker reads: two messages per row
        for m in manuals:
            m.body = prose(12, seed=m.pk + 1000 * (round_ + 1))
        Manual.objects.bulk_update(manuals, ["body"])
    api.latency = 0.2  # the lanes' reads and writes overlap, as with a real API
    drain(concurrency=3, batch_size=20, max_requests=2)
    assert duplicated_chunks() == 0
    from django_autoembed import chunking
    from django_autoembed.declarations import registry
    from django_autoembed.providers import for_config

    config = registry.get("testapp.Manual.embedding")
    provider = for_config(config)
    for m in manuals[::10]:
        text = f"{m.title}\n\n{m.body}"
        expected = chunking.split(
            text,
            size=config.chunk_tokens,
            overlap=config.chunk_overlap,
            count=provider.count_tokens,
            cut=provider.head,
            joins_at_spaces=provider.splits_at_spaces(),
        )
        assert chunk_texts(m) == expected


def test_a_search_over_chunks_returns_k_rows_when_one_document_owns_the_nearest_chunks(api):
    api.vectors = "related"  # a long document's chunks lie near each other, as real ones do
    long = Manual.objects.create(title="The long one", body=prose(1200, seed=1))
    short = [Manual.objects.create(title=f"Note {n}", body=f"Short note {n}.") for n in range(6)]
    drain()
    assert ManualChunk.objects.filter(parent=long).count() > 600
    query = ManualChunk.objects.filter(parent=long).order_by("number")[40].text
    found = list(Manual.objects.semantic_search(query, k=5))
    assert len(found) == 5 and len({f.pk for f in found}) == 5
    assert found[0].pk == long.pk and {f.pk for f in found[1:]} <= {s.pk for s in short}
    assert [f.distance for f in found] == sorted(f.distance for f in found)
    assert len(list(Manual.objects.semantic_search(query, k=10))) == 7  # the table, exhausted
    hybrid = list(Manual.objects.hybrid_search(query, k=5))
    assert len(hybrid) == 5 and len({h.pk for h in hybrid}) == 5


def test_a_rows_best_chunk_is_found_exactly_among_its_own_chunks_never_by_the_graph(api):
    """Walking the chunks' HNSW graph for one row's nearest chunk is approximate (after many
    rewrites it ranked a row by another of its chunks) and slow on a large table: the best
    chunk of each row found is read from that row's chunks, even when a plan without a sort
    looks cheaper."""
    manuals = [Manual.objects.create(title=f"m {n}", body=prose(12, seed=n)) for n in range(5)]
    drain()
    query = ManualChunk.objects.filter(parent=manuals[1]).order_by("number")[1].text
    graph = ManualChunk._meta.indexes[0].name
    for search in (
        lambda: Manual.objects.semantic_search(query, k=3),
        lambda: Manual.objects.hybrid_search(query, k=3),
    ):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("set local enable_sort = off")
            plan = search().explain()
        assert f"Index Scan using {graph}" not in plan.split("SubPlan", 1)[-1]
    found = list(Manual.objects.semantic_search(query, k=3))
    for row in found:
        chunks = ManualChunk.objects.filter(parent=row.pk)
        exact = min(
            chunks.annotate(d=CosineDistance("embedding", fake_vector(query, 1536))),
            key=lambda c: c.d,
        )
        assert row.chunk_number == exact.number and row.distance == pytest.approx(exact.d, abs=1e-3)
    assert {r.pk for r in found} <= {m.pk for m in manuals}
