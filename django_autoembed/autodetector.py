"""makemigrations: migrations that need pgvector or our trigger functions depend on our app.

Django orders migrations without a dependency between them by app label, so
an app named ``blog`` would otherwise create its ``halfvec`` column before
``django_autoembed`` has created the extension, and its triggers before the
trigger functions exist.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.migrations.autodetector import MigrationAutodetector
from pgvector.django import HalfVectorField, HnswIndex, IvfflatIndex, SparseVectorField, VectorField

from .hnsw.indexes import HnswIndex as AutoembedHnswIndex
from .triggers import EmbeddingTrigger

APP = "django_autoembed"
DEPENDENCY = (APP, "0001_initial")
# Triggers of a config stored in chunks call autoembed.delete_chunks(), created later.
CHUNKS_DEPENDENCY = (APP, "0007_chunk_deletes")
VECTOR_FIELDS = (VectorField, HalfVectorField, SparseVectorField)
VECTOR_INDEXES = (AutoembedHnswIndex, HnswIndex, IvfflatIndex)


def needs_autoembed(operation: Any) -> bool:
    """Whether the operation's SQL needs pgvector or the ``autoembed`` schema."""
    return needed_migration(operation) is not None


def _triggers(operation: Any) -> list[EmbeddingTrigger]:
    if isinstance(operation, migrations.CreateModel):
        constraints = operation.options.get("constraints", [])
    elif isinstance(operation, migrations.AddConstraint):
        constraints = [operation.constraint]
    else:
        return []
    return [c for c in constraints if isinstance(c, EmbeddingTrigger)]


def needed_migration(operation: Any) -> tuple[str, str] | None:
    """The migration of ours the operation's SQL needs, or None."""
    if any(t.chunk_table for t in _triggers(operation)):
        return CHUNKS_DEPENDENCY
    return DEPENDENCY if _needs_schema(operation) else None


def _needs_schema(operation: Any) -> bool:
    if isinstance(operation, migrations.CreateModel):
        options = operation.options
        return (
            any(isinstance(f, VECTOR_FIELDS) for _, f in operation.fields)
            or any(isinstance(c, EmbeddingTrigger) for c in options.get("constraints", []))
            or any(isinstance(i, VECTOR_INDEXES) for i in options.get("indexes", []))
        )
    if isinstance(operation, (migrations.AddField, migrations.AlterField)):
        return isinstance(operation.field, VECTOR_FIELDS)
    if isinstance(operation, migrations.AddConstraint):
        return isinstance(operation.constraint, EmbeddingTrigger)
    if isinstance(operation, migrations.AddIndex):
        return isinstance(operation.index, VECTOR_INDEXES)
    return False


class AutoembedAutodetector(MigrationAutodetector):
    def arrange_for_graph(
        self, changes: dict[str, list[Any]], graph: Any, migration_name: str | None = None
    ) -> dict[str, list[Any]]:
        for app_label, app_migrations in changes.items():
            if app_label == APP:
                continue
            for migration in app_migrations:
                needed = {
                    n for op in migration.operations if (n := needed_migration(op)) is not None
                }
                # The latest of ours that any operation needs (the names sort by number).
                latest = max(needed, default=None)
                ours = [d for d in migration.dependencies if d[0] == APP]
                if latest is not None and not any(d[1] >= latest[1] for d in ours):
                    migration.dependencies = [d for d in migration.dependencies if d[0] != APP] + [
                        latest
                    ]
        return super().arrange_for_graph(changes, graph, migration_name)
