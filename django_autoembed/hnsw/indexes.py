"""The HNSW and GIN indexes the mixin adds, emitted without django.contrib.postgres.

pgvector's own ``HnswIndex`` derives from ``PostgresIndex``, which Django 6.1
refuses unless ``django.contrib.postgres`` is installed (check postgres.E005).
This one is a plain ``models.Index`` that writes the same DDL, so
``INSTALLED_APPS += ["django_autoembed"]`` is the whole install.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class HnswIndex(models.Index):
    """``CREATE INDEX ... USING hnsw (column opclass) WITH (m = .., ef_construction = ..)``."""

    suffix = "hnsw"

    def __init__(
        self,
        *expressions: Any,
        m: int | None = None,
        ef_construction: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.m = m
        self.ef_construction = ef_construction
        super().__init__(*expressions, **kwargs)

    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        path = "django_autoembed.hnsw.indexes.HnswIndex"
        if self.m is not None:
            kwargs["m"] = self.m
        if self.ef_construction is not None:
            kwargs["ef_construction"] = self.ef_construction
        return path, tuple(args), kwargs

    def with_params(self) -> list[str]:
        params = []
        if self.m is not None:
            params.append(f"m = {int(self.m)}")
        if self.ef_construction is not None:
            params.append(f"ef_construction = {int(self.ef_construction)}")
        return params

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        statement = super().create_sql(model, schema_editor, using=" USING hnsw", **kwargs)
        params = self.with_params()
        if params:
            statement.parts["extra"] = f" WITH ({', '.join(params)}){statement.parts['extra']}"  # type: ignore[assignment]
        return statement

    def __eq__(self, other: object) -> bool:
        # Migrations written before this class existed hold pgvector's HnswIndex with
        # the same arguments; it builds the same index, so makemigrations sees no change.
        if (
            isinstance(other, models.Index)
            and type(other).__name__ == "HnswIndex"
            and type(other).__module__.startswith("pgvector.")
        ):
            return self.deconstruct()[1:] == other.deconstruct()[1:]
        return super().__eq__(other)


class TextSearchIndex(models.Index):
    """``CREATE INDEX ... USING gin (to_tsvector(config, fields))``: the full-text side of
    ``hybrid_search`` (the expression is the one its queries use)."""

    suffix = "fts"

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        return super().create_sql(model, schema_editor, using=" USING gin", **kwargs)


def managed_index(config: Any) -> HnswIndex | None:
    """The HNSW index (this app's class) over the config's vectors, if their model has one."""
    for index in config.vector_model._meta.indexes:
        if isinstance(index, HnswIndex) and list(index.fields) == [config.column]:
            return index
    return None
