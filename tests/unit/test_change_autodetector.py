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


def operations(before: ProjectState, after: ProjectState, said: list | None = None) -> list:
    questioner = NonInteractiveMigrationQuestioner(
        specified_apps={"shop"}, log=(said if said is not None else []).append
    )
    detector = AutoembedAutodetector(before, after, questioner)
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


CHUNKS = "shop_item_embedding_chunks"


def chunked(**kwargs) -> EmbeddingTrigger:
    return trigger(
        **{
            "name": "autoembed_shop_item_embedding_chunks",
            "column": f"{CHUNKS}.embedding",
            "function": "shop_item_embedding_chunks_input",
            "chunk_table": CHUNKS,
            "chunk_tokens": 400,
            "chunk_overlap": 64,
            **kwargs,
        }
    )


def chunked_state(constraint: EmbeddingTrigger, dimensions: int = 1536) -> ProjectState:
    """Item with its chunk model, as the mixin declares them."""
    project = state(constraint)
    fields = [
        ("id", models.BigAutoField(primary_key=True)),
        ("parent", models.ForeignKey("shop.item", models.CASCADE)),
        ("number", models.PositiveIntegerField()),
        ("text", models.TextField()),
        ("embedding", HalfVectorField(dimensions=dimensions)),
    ]
    project.add_model(ModelState("shop", "ItemChunk", fields, {"db_table": CHUNKS}))
    return project


@pytest.mark.parametrize(
    "after",
    [{"model": "text-embedding-3-large"}, {"chunk_tokens": 200}, {"chunk_overlap": 0}],
    ids=["model", "chunk_tokens", "chunk_overlap"],
)
def test_a_change_of_a_config_in_chunks_is_one_change_operation(after):
    found, _ = operations(chunked_state(chunked()), chunked_state(chunked(**after)))
    assert [type(op) for op in found] == [ChangeEmbedding]
    assert found[0].model_name == "Item" and found[0].field is None
    assert "chunks" in found[0].migration_name_fragment


def test_new_dimensions_of_chunks_fold_the_chunk_models_field_into_it():
    found, _ = operations(
        chunked_state(chunked()),
        chunked_state(chunked(model="text-embedding-3-large"), dimensions=1024),
    )
    assert [type(op) for op in found] == [ChangeEmbedding]
    assert found[0].model_name == "Item" and found[0].field.dimensions == 1024
    after = chunked_state(chunked())
    found[0].state_forwards("shop", after)
    assert after.models["shop", "itemchunk"].fields["embedding"].dimensions == 1024


def test_a_trigger_written_before_chunking_was_recorded_is_no_change():
    said: list[str] = []
    found, _ = operations(
        chunked_state(chunked(chunk_tokens=None, chunk_overlap=None)),
        chunked_state(chunked()),
        said,
    )
    assert [type(op) for op in found] == [migrations.AlterConstraint]
    # A change of chunking in the same step cannot be seen: makemigrations says how to make it.
    [note] = said
    assert "chunk_tokens=400, chunk_overlap=64" in note and "put the old values back" in note
    said.clear()
    operations(chunked_state(chunked()), chunked_state(chunked(chunk_tokens=200)), said)
    assert said == []  # a recorded chunking's change is a ChangeEmbedding, with nothing to say


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


@pytest.mark.parametrize("label", ["testapp.Document.embedding", "testapp.Manual.embedding"])
def test_the_migrations_shadow_triggers_are_the_shadow_configs(label):
    """The migration makes (and the abandon drops) the shadow's triggers by their names in
    the migration state; the cutover drops them by the shadow config's: the same triggers."""
    from datetime import datetime

    from django_autoembed import changes
    from django_autoembed.change_operations import shadow_trigger
    from django_autoembed.declarations import registry

    config = registry.get(label)
    live = EmbeddingTrigger.for_config(config)
    made = shadow_trigger(live, config.table, config.config_name)
    change = changes.Change(
        *[label, config.table, config.queue_column, made.column, "", {}],
        *["openai", "a", 1536, "openai", "b", 1024, True, datetime.now(), None, None, None],
        *[False, 0, "", 0.0, None],
    )
    shadow = changes.shadow(config, change)
    expected = EmbeddingTrigger.for_config(shadow)
    names = ("name", "column", "function", "chunk_table", "fields", "template")
    assert [getattr(made, n) for n in names] == [getattr(expected, n) for n in names]
    assert made.statements(config.model_class) == expected.statements(config.model_class)


def test_a_change_records_the_longest_names_of_chunk_columns():
    """A config in chunks names its column ``<chunk table>.<column>``: two names of up to 63
    characters (a 32-character table made the shadow's 64 and failed the migration)."""
    from django_autoembed.changes import EmbeddingChange

    for name in ("column", "shadow"):
        assert EmbeddingChange._meta.get_field(name).max_length >= 2 * 63 + 1
