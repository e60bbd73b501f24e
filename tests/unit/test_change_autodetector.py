"""What makemigrations writes when a config's declaration changes (no database needed)."""

import pytest
from django.db import migrations, models
from django.db.migrations.graph import MigrationGraph
from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
from django.db.migrations.state import ModelState, ProjectState
from pgvector.django import HalfVectorField

from django_autoembed.autodetector import CHANGE_DEPENDENCY, AutoembedAutodetector
from django_autoembed.change_operations import (
    ChangeEmbedding,
    ChangeMarker,
    FinishEmbeddingChange,
    marker_name,
)
from django_autoembed.triggers import EmbeddingTrigger


def trigger(**kwargs) -> EmbeddingTrigger:
    options = {
        "name": "autoembed_shop_item_embedding",
        "column": "embedding",
        "function": "shop_item_embedding_input",
        "fields": ["title"],
    }
    return EmbeddingTrigger(**{**options, **kwargs})


def state(constraint: EmbeddingTrigger, dimensions: int = 1536, marker: bool = False):
    fields = [
        ("id", models.BigAutoField(primary_key=True)),
        ("title", models.TextField()),
        ("body", models.TextField()),
        ("embedding", HalfVectorField(dimensions=dimensions, null=True)),
    ]
    if marker:
        fields.append((marker_name("embedding"), ChangeMarker(column="embedding")))
    project = ProjectState()
    project.add_model(ModelState("shop", "Item", fields, {"constraints": [constraint]}))
    return project


def operations(before: ProjectState, after: ProjectState) -> list:
    detector = AutoembedAutodetector(
        before, after, NonInteractiveMigrationQuestioner(specified_apps={"shop"})
    )
    graph = MigrationGraph()
    changes = detector.changes(graph=graph)
    return [op for migration in changes.get("shop", []) for op in migration.operations], changes


@pytest.mark.parametrize(
    "after",
    [
        {"model": "text-embedding-3-large"},
        {"provider": "local"},
        {"fields": ["title", "body"]},
        {"template": "# {title}"},
    ],
    ids=["model", "provider", "fields", "template"],
)
def test_a_change_of_what_makes_the_vectors_is_one_change_operation(after):
    found, changes = operations(state(trigger()), state(trigger(**after)))
    assert [type(op) for op in found] == [ChangeEmbedding]
    assert found[0].constraint == trigger(**after) and found[0].field is None
    assert CHANGE_DEPENDENCY in changes["shop"][0].dependencies


def test_new_dimensions_fold_the_column_change_into_it():
    found, _ = operations(state(trigger()), state(trigger(), dimensions=1024))
    assert [type(op) for op in found] == [ChangeEmbedding]
    assert found[0].field.dimensions == 1024


def test_a_change_that_makes_the_same_vectors_is_left_to_django():
    found, _ = operations(state(trigger()), state(trigger(clear_on_update=True)))
    assert ChangeEmbedding not in {type(op) for op in found}
    assert found  # Django's own constraint operations


def test_the_settings_model_named_in_the_declaration_is_no_change(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "MODEL": "text-embedding-3-small"}
    found, _ = operations(state(trigger()), state(trigger(model="text-embedding-3-small")))
    assert [type(op) for op in found] == [migrations.AlterConstraint]


def test_a_config_stored_in_chunks_is_left_to_django():
    chunks = {"chunk_table": "shop_item_embedding_chunks"}
    found, _ = operations(
        state(trigger(**chunks)), state(trigger(model="text-embedding-3-large", **chunks))
    )
    assert ChangeEmbedding not in {type(op) for op in found}


def test_the_next_migration_drops_the_old_vectors():
    found, _ = operations(state(trigger(), marker=True), state(trigger()))
    assert [type(op) for op in found] == [FinishEmbeddingChange]


def test_the_change_leaves_its_marker_in_the_state():
    before = state(trigger())
    change = ChangeEmbedding("item", trigger(model="text-embedding-3-large"))
    after = before.clone()
    change.state_forwards("shop", after)
    item = after.models["shop", "item"]
    assert isinstance(item.fields[marker_name("embedding")], ChangeMarker)
    assert item.options["constraints"] == [trigger(model="text-embedding-3-large")]
