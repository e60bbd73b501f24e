"""A plain ``save()`` of an instance loaded before the worker wrote its vector keeps the vector:
the code did not assign it, and no trigger would queue a row whose text did not change."""

import numpy as np
import pytest
from django.contrib.admin import ModelAdmin
from django.contrib.admin.sites import AdminSite
from django.contrib.auth.models import User
from django.test import RequestFactory

from django_autoembed.testing import fake_vector
from tests.helpers import drain, embedded_pks, queued_ids, stored_vector
from tests.testapp.models import Article, Chapter, Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_saving_an_instance_loaded_before_its_vector_keeps_the_vector(api):
    doc = Document.objects.create(title="a title", content="some text")
    stale = Document.objects.get(pk=doc.pk)  # loaded with no vector
    drain()
    stale.views += 1
    stale.save()
    assert Document.objects.get(pk=doc.pk).views == 1
    assert doc.pk in embedded_pks(Document)
    assert not queued_ids()  # nothing was lost, so nothing waits


def test_an_instance_loaded_with_an_old_vector_does_not_write_it_back(api):
    doc = Document.objects.create(title="first", content="")
    drain()
    stale = Document.objects.get(pk=doc.pk)  # holds the first text's vector
    Document.objects.filter(pk=doc.pk).update(title="second")
    drain()
    stale.refresh_from_db(fields=["views"])  # a partial refresh leaves the old vector
    stale.title = "second"  # the same text as stored: no trigger, no new job
    stale.save()
    np.testing.assert_allclose(
        stored_vector(Document, doc.pk), fake_vector("second", 1536), atol=2e-3
    )
    assert not queued_ids()


def test_a_vector_the_code_assigns_or_names_is_written(api):
    doc = Document.objects.create(title="a title")
    drain()
    loaded = Document.objects.get(pk=doc.pk)
    mine = fake_vector("my own vector", 1536)
    loaded.embedding = mine
    loaded.save()
    np.testing.assert_allclose(stored_vector(Document, doc.pk), mine, atol=2e-3)
    again = Document.objects.get(pk=doc.pk)
    again.embedding = None
    again.save(update_fields=["embedding"])  # named: the caller's to write
    assert doc.pk not in embedded_pks(Document)


def test_a_multi_table_childs_save_keeps_the_parents_vector(api):
    chapter = Chapter.objects.create(title="chapter one", content="text", number=1)
    stale = Chapter.objects.get(pk=chapter.pk)
    drain()
    stale.number = 2
    stale.save()
    assert chapter.pk in embedded_pks(Document)


def test_the_admin_change_form_keeps_the_vector_written_while_it_was_open(api):
    """The admin loads the row, the worker writes its vector, the editor saves the form."""
    article = Article.objects.create(title="a title", body="a body")
    admin = ModelAdmin(Article, AdminSite())
    request = RequestFactory().post("/")
    request.user = User(is_superuser=True, is_staff=True)
    opened = admin.get_object(request, str(article.pk))
    drain()
    form = admin.get_form(request, opened)({"title": "a title", "body": "a body"}, instance=opened)
    assert form.is_valid(), form.errors
    admin.save_model(request, form.save(commit=False), form, change=True)
    assert article.pk in embedded_pks(Article, "title_embedding")
    assert article.pk in embedded_pks(Article, "body_embedding")


def test_instances_the_code_created_keep_the_vector_written_after_them(api):
    """create(), save() of a new instance, get_or_create and bulk_create: each instance holds
    no vector, and the worker writes one after; saving the instance again keeps it."""
    made = Document.objects.create(title="created")
    built = Document(title="built")
    built.save()
    got, _ = Document.objects.get_or_create(title="got")
    [bulk] = Document.objects.bulk_create([Document(title="bulk")])
    drain()
    for doc in (made, built, got, bulk):
        doc.views = 7
        doc.save()
    assert embedded_pks(Document) == {made.pk, built.pk, got.pk, bulk.pk}
    assert set(Document.objects.values_list("views", flat=True)) == {7}


def test_an_instance_loaded_with_deferred_fields_keeps_the_vector_on_save(api):
    """Django saves such an instance by the fields it loaded: the vector is among them, but
    the code did not name it."""
    doc = Document.objects.create(title="a title", content="text")
    partial = Document.objects.defer("content").get(pk=doc.pk)
    only = Document.objects.only("title", "views", "embedding").get(pk=doc.pk)
    drain()
    for stale in (partial, only):
        stale.views += 1
        stale.save()
    assert doc.pk in embedded_pks(Document)


def test_an_assigned_vector_is_saved_whatever_was_loaded_or_saved_in_between(api):
    doc = Document.objects.create(title="a title", content="text")
    drain()
    mine = fake_vector("assigned by the code", 1536)
    later = Document.objects.defer("content").get(pk=doc.pk)
    later.embedding = mine
    assert later.content == "text"  # loads the deferred field: the assignment stands
    later.save(update_fields=["views"])  # saved another field: the assignment still stands
    later.refresh_from_db(fields=["title"])
    later.save()
    np.testing.assert_allclose(stored_vector(Document, doc.pk), mine, atol=2e-3)
