"""Declarations become triggers that queue exactly the rows whose text changed."""

import uuid

from django.db import connection, transaction

from tests.helpers import purge_queue, queue_messages, queued_ids
from tests.testapp.models import Article, Chapter, Document, DocumentProxy, Note, Tag

GUIDE_KEYS = {"id", "schema", "table", "contentFunction", "embeddingColumn"}


def test_insert_queues_one_message_in_the_guides_shape():
    doc = Document.objects.create(title="t", content="c")
    (message,) = queue_messages()
    assert set(message) == GUIDE_KEYS
    assert message == {
        "id": doc.pk,
        "schema": "public",
        "table": "testapp_document",
        "contentFunction": "testapp_document_embedding_input",
        "embeddingColumn": "embedding",
    }


def test_bulk_create_queues_each_row_once_in_one_trigger_call():
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("set local track_functions = 'all'")
        docs = Document.objects.bulk_create(
            [Document(title=f"t{i}", content="c") for i in range(10_000)]
        )
        cursor.execute(
            "select pg_stat_get_xact_function_calls('autoembed.queue_inserted'::regproc)"
        )
        calls = cursor.fetchone()[0]
    assert calls == 1
    ids = queued_ids()
    assert sorted(ids) == sorted(d.pk for d in docs)
    assert len(queue_messages()) == 20  # 500 row ids per message


def test_update_of_unrelated_column_queues_nothing():
    doc = Document.objects.create(title="t", content="c")
    purge_queue()
    doc.views += 1
    doc.save(update_fields=["views"])
    Document.objects.filter(pk=doc.pk).update(views=7)
    doc.save()  # every column written, same text
    assert queue_messages() == []


def test_update_of_embedded_field_queues_that_row():
    docs = Document.objects.bulk_create([Document(title=f"t{i}") for i in range(3)])
    purge_queue()
    Document.objects.filter(pk=docs[1].pk).update(title="changed")
    assert queued_ids() == [docs[1].pk]
    purge_queue()
    Document.objects.update(content="new body")  # every row's text changes
    assert sorted(queued_ids()) == sorted(d.pk for d in docs)


def test_clear_on_update_nulls_only_when_text_changes():
    article = Article.objects.create(title="a", body="b")
    with connection.cursor() as cursor:
        cursor.execute(
            "update testapp_article set title_embedding = array_fill(0.5, array[1536])::halfvec, "
            "body_embedding = array_fill(0.5, array[1536])::halfvec"
        )
    Article.objects.filter(pk=article.pk).update(body="b2")  # title config unaffected
    article.refresh_from_db()
    assert article.title_embedding is not None and article.body_embedding is not None
    Article.objects.filter(pk=article.pk).update(title="a2")
    article.refresh_from_db()
    assert article.title_embedding is None  # clear_on_update=True
    assert (
        article.body_embedding is not None
    )  # clear_on_update=False: old vector kept until re-embedded


def test_template_config_and_null_fields_render_as_empty():
    article = Article.objects.create(title="Hello", body=None)
    with connection.cursor() as cursor:
        cursor.execute(
            "select testapp_article_body_embedding_input(a), "
            "testapp_article_title_embedding_input(a) "
            "from testapp_article a where id = %s",
            [article.pk],
        )
        assert cursor.fetchone() == ("# Hello\n\n", "Hello")
    messages = queue_messages()
    assert {m["embeddingColumn"] for m in messages} == {"title_embedding", "body_embedding"}


def test_uuid_and_text_primary_keys_and_quoted_table_names():
    note = Note.objects.create(body="n")
    Tag.objects.create(slug="it's-a-slug", label="l")
    messages = queue_messages()
    assert {"id": str(note.pk), "table": "Notes With Spaces"}.items() <= messages[0].items()
    assert messages[1]["id"] == "it's-a-slug"
    assert isinstance(uuid.UUID(messages[0]["id"]), uuid.UUID)


def test_proxy_and_multi_table_child_add_no_triggers():
    with connection.cursor() as cursor:
        cursor.execute(
            "select tgrelid::regclass::text, count(*) from pg_trigger where tgname like "
            "'autoembed%%' "
            "group by 1 order by 1"
        )
        triggers = dict(cursor.fetchall())
    assert triggers == {
        '"Notes With Spaces"': 2,
        "testapp_article": 5,
        "testapp_document": 2,
        "testapp_tag": 2,
        "testapp_quote": 2,
        "testapp_manual": 3,  # chunked: its rows' chunks are deleted with them, in SQL too
        "testapp_essay": 2,
        "testapp_book": 2,
        "testapp_memo": 3,
        "documents_document": 3,  # chunked too
    }
    chapter = Chapter.objects.create(title="c", number=2)
    proxy = DocumentProxy.objects.create(title="p")
    assert sorted(queued_ids()) == sorted([chapter.pk, proxy.pk])
