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

from . import settings
from .change_operations import ChangeEmbedding, ChangeMarker, FinishEmbeddingChange
from .hnsw.indexes import HnswIndex as AutoembedHnswIndex
from .triggers import EmbeddingTrigger

APP = "django_autoembed"
DEPENDENCY = (APP, "0001_initial")
# Triggers of a config stored in chunks call autoembed.delete_chunks(), created later.
CHUNKS_DEPENDENCY = (APP, "0007_chunk_deletes")
# A model change records itself in EmbeddingChange.
CHANGE_DEPENDENCY = (APP, "0014_change_chunk_columns")
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
    if isinstance(operation, (ChangeEmbedding, FinishEmbeddingChange)):
        return CHANGE_DEPENDENCY
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
    def _sort_migrations(self) -> None:
        generated: dict[str, list[Any]] = self.generated_operations  # type: ignore[attr-defined]
        for app_label, operations in generated.items():
            generated[app_label] = self._fold(app_label, operations)
        super()._sort_migrations()  # type: ignore[misc]

    def _fold(self, app_label: str, operations: list[Any]) -> list[Any]:
        """A config whose model, provider, dimensions or text changed: one ChangeEmbedding
        instead of Django's constraint and field operations; a change's marker removed: one
        FinishEmbeddingChange instead of RemoveField."""
        groups: dict[tuple[str, str], list[Any]] = {}
        out: list[Any] = []
        for operation in operations:
            key = self._change_key(app_label, operation)
            if key is None:
                out.append(self._finish(app_label, operation))
                continue
            if key not in groups:
                groups[key] = []
                out.append(key)  # the change takes the place of its first operation
            groups[key].append(operation)
        folded: list[Any] = []
        for item in out:
            if not isinstance(item, tuple):
                folded.append(item)
                continue
            change = self._change(app_label, item, groups[item])
            folded.extend([change] if change is not None else groups[item])
        return folded

    def _old_new(self, app_label: str, model: str, column: str) -> tuple[Any, Any]:
        def trigger(state: Any) -> Any:
            model_state = state.models.get((app_label, model))
            for c in model_state.options.get("constraints", []) if model_state else []:
                if isinstance(c, EmbeddingTrigger) and c.column == column:
                    return c
            return None

        return trigger(self.from_state), trigger(self.to_state)

    def _change_key(self, app_label: str, operation: Any) -> tuple[str, str] | None:
        model = getattr(operation, "model_name_lower", None)
        if model is None:
            return None
        if isinstance(operation, (migrations.AddConstraint, migrations.AlterConstraint)):
            constraint = operation.constraint
            column = constraint.column if isinstance(constraint, EmbeddingTrigger) else None
        elif isinstance(operation, migrations.RemoveConstraint):
            state = self.from_state.models.get((app_label, model))
            found = [
                c
                for c in (state.options.get("constraints", []) if state else [])
                if c.name == operation.name and isinstance(c, EmbeddingTrigger)
            ]
            column = found[0].column if found else None
        elif isinstance(operation, migrations.AlterField):
            if not isinstance(operation.field, VECTOR_FIELDS):
                return None
            column = operation.name
            parent = self._chunks_of(app_label, model, column)
            if parent is not None:  # the vector field of a chunk model: its parent's change
                model, column = parent
        else:
            return None
        if column is None:
            return None
        old, new = self._old_new(app_label, model, column)
        if old is None or new is None or old.name != new.name:
            return None
        return model, column

    def _chunks_of(self, app_label: str, model: str, field: str) -> tuple[str, str] | None:
        """The parent model and trigger column of a chunk model's vector field (None: the
        model is no chunk model)."""
        state = self.to_state.models.get((app_label, model))
        table = state.options.get("db_table") if state else None
        if not table:
            return None
        for (label, name), parent in self.to_state.models.items():
            for c in parent.options.get("constraints", []) if label == app_label else []:
                if isinstance(c, EmbeddingTrigger) and c.column == f"{table}.{field}":
                    return name, c.column
        return None

    def _change(self, app_label: str, key: tuple[str, str], group: list[Any]) -> Any:
        model, column = key
        old, new = self._old_new(app_label, model, column)
        altered = next((o for o in group if isinstance(o, migrations.AlterField)), None)
        field = altered.field if altered is not None else None
        defaults = settings.current()

        def made_by(trigger: Any) -> tuple[str, str]:  # a name left out is the settings'
            return (trigger.model or defaults.model, trigger.provider or defaults.provider)

        if made_by(old) == made_by(new) and old.makes_same_text(new) and not field:
            if old.chunk_tokens is None and new.chunk_tokens is not None:
                self._say(_first_recorded(app_label, self.to_state.models[app_label, model], new))
            return None  # no change of what makes the vectors: Django's operations do
        change = ChangeEmbedding(
            model_name=self.to_state.models[app_label, model].name, constraint=new, field=field
        )
        change._auto_deps = [d for o in group for d in getattr(o, "_auto_deps", [])]  # type: ignore[attr-defined]
        return change

    def _say(self, text: str) -> None:
        """A note in makemigrations' output (interactive or not)."""
        questioner: Any = self.questioner
        output = getattr(questioner, "prompt_output", None)
        log = getattr(questioner, "log", None)
        if output is not None:
            output.write(text)
        elif callable(log) and getattr(questioner, "verbosity", 1) > 0:
            log(text)

    def _finish(self, app_label: str, operation: Any) -> Any:
        if not isinstance(operation, migrations.RemoveField):
            return operation
        state = self.from_state.models.get((app_label, operation.model_name_lower))
        field = state.fields.get(operation.name) if state else None
        if not isinstance(field, ChangeMarker):
            return operation
        finish = FinishEmbeddingChange(model_name=operation.model_name, name=operation.name)
        finish._auto_deps = getattr(operation, "_auto_deps", [])  # type: ignore[attr-defined]
        return finish

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


def _first_recorded(app_label: str, model: Any, trigger: EmbeddingTrigger) -> str:
    """What makemigrations says when a chunked config's chunking is recorded for the first
    time (its trigger predates the recording): a change made in the same step goes unseen."""
    return (
        f"Recorded the chunking of {app_label}.{model.name} ({trigger.column}: chunk_tokens="
        f"{trigger.chunk_tokens}, chunk_overlap={trigger.chunk_overlap}) for the first time; "
        "nothing is re-embedded. If you also changed it in this step, the stored chunks keep "
        "their old size: put the old values back, run makemigrations, then set the new ones "
        "and run makemigrations again (a change with no downtime, ChangeEmbedding)."
    )
