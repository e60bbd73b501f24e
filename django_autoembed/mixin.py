"""EmbeddingMixin and the binding of declarations to model classes.

A model declares ``embed_fields = [...]`` (shorthand) or
``embedding_configs = [EmbeddingConfig(...), ...]``. When the model class is
prepared, each config is bound to it: the vector column and HNSW index are
added unless the model declares its own, and an ``EmbeddingTrigger``
constraint is appended so ``makemigrations`` emits the database objects.

A plain ``save()`` leaves out the vector columns the worker writes unless the code
assigned them since the instance was loaded or saved (``saving``).
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import replace
from typing import Any, Self

from django.db import models
from django.db.models.signals import class_prepared
from pgvector.django import HalfVectorField

from . import changes
from .constraints import UniqueChunkNumbers
from .declarations import EmbeddingConfig, registry, short_name
from .fields import TsvectorField
from .hnsw.indexes import HnswIndex, TextSearchIndex
from .hybrid import text_vector
from .saving import left_out, loaded_vectors, remember
from .search import EmbeddingManager
from .triggers import EmbeddingTrigger


class EmbeddingMixin(models.Model):
    """Mixin for models whose text is embedded automatically.

    Declare ``embed_fields = ["title", "content"]`` or
    ``embedding_configs = [EmbeddingConfig(...)]`` on the model. The default
    manager gains ``semantic_search``, ``nearest`` and ``similar_to``.
    """

    objects = EmbeddingManager()

    class Meta:
        abstract = True

    @classmethod
    def from_db(
        cls, db: str | None, field_names: Collection[str], values: Collection[Any], **kwargs: Any
    ) -> Self:
        instance = super().from_db(db, field_names, values, **kwargs)
        loaded = loaded_vectors(instance)
        if loaded:  # (a model of chunks only has none to remember)
            instance._autoembed_loaded = loaded
        return instance

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        fields = kwargs.get("fields", args[1] if len(args) > 1 else None)
        self._autoembed_loaded = remember(self, None if fields is None else set(fields))

    def save(self, *args: Any, **kwargs: Any) -> None:
        # What the caller named: Django may pass on its own update_fields (the fields loaded,
        # for an instance loaded with some deferred), and those are not the caller's choice.
        named = kwargs.get("update_fields")
        self._autoembed_named = None if named is None else set(named)
        try:
            super().save(*args, **kwargs)
        finally:
            self.__dict__.pop("_autoembed_named", None)

    def save_base(self, *args: Any, **kwargs: Any) -> None:
        super().save_base(*args, **kwargs)
        written = kwargs.get("update_fields")
        self._autoembed_loaded = remember(self, None if written is None else set(written))

    def _do_update(
        self,
        base_qs: Any,
        using: Any,
        pk_val: Any,
        values: Any,
        update_fields: Any,
        *rest: Any,
    ) -> Any:
        # The caller's own update_fields (or Django's, when save() was not the way in).
        named = self.__dict__.get("_autoembed_named", update_fields)
        loaded = self.__dict__.get("_autoembed_loaded") or {}
        values = [v for v in values if not left_out(self, loaded, v[0], named)]
        return super()._do_update(base_qs, using, pk_val, values, update_fields, *rest)


def declared_configs(cls: type[models.Model]) -> list[EmbeddingConfig]:
    """Configs declared on cls itself or on an abstract ancestor (not a concrete parent)."""
    for klass in cls.__mro__:
        own = klass.__dict__
        if "embed_fields" in own or "embedding_configs" in own:
            meta = getattr(klass, "_meta", None)
            if klass is not cls and meta is not None and not meta.abstract:
                return []  # inherited from a concrete parent: the parent's table holds it
            configs = list(own.get("embedding_configs") or [])
            if own.get("embed_fields"):
                shorthand = EmbeddingConfig(
                    fields=tuple(own["embed_fields"]), text_search=own.get("embed_text_search")
                )
                configs.insert(0, shorthand)
            return configs
    return []


def hnsw_index(table: str, column: str) -> HnswIndex:
    """The index the mixin puts on a column it adds (pgvector's default m and ef_construction)."""
    return HnswIndex(
        name=short_name(table, column, "hnsw", limit=30),
        fields=[column],
        m=16,
        ef_construction=64,
        opclasses=["halfvec_cosine_ops"],
    )


def chunk_model(
    parent: type[models.Model],
    config: EmbeddingConfig,
    *,
    apps: Any = None,
    table: str | None = None,
) -> type[models.Model]:
    """The child model that holds a chunked config's vectors, one row per chunk.

    It lives in the parent's app (``makemigrations`` creates its table there): a foreign
    key to the parent row (deleted with it), the chunk's number and text, its vector and
    an HNSW index.

    ``apps``: a registry apart from the project's, for the model a search reads a model
    change's new chunk table through (``changes``): no migration, no reverse accessor on
    the parent, and not importable from the parent's module; ``table``: its table's name.
    """
    apart = apps is not None
    suffix = (
        "" if config.config_name == "embedding" else config.config_name.title().replace("_", "")
    )
    meta = {
        "app_label": parent._meta.app_label,
        # the parent's registry (a historical or test one too), or one apart
        "apps": apps if apart else parent._meta.apps,
        "db_table": table or config.chunk_table,
        "ordering": ["parent", "number"],
        "verbose_name": f"{parent._meta.verbose_name} chunk",
        "indexes": (
            [hnsw_index(config.chunk_table, config.column)] if config.index and not apart else []
        ),
        "constraints": [UniqueChunkNumbers(name=changes.unique_chunks_name(config.chunk_table))],
    }
    attrs: dict[str, Any] = {
        "__module__": parent.__module__,
        "__doc__": f"Chunks of {parent.__name__}'s text for {config.config_name!r}, one vector "
        "each.",
        "parent": models.ForeignKey(
            parent,
            on_delete=models.CASCADE,
            related_name="+" if apart else f"{config.config_name}_chunks",
        ),
        "number": models.PositiveIntegerField(),
        "text": models.TextField(),
        config.column: HalfVectorField(dimensions=config.get_dimensions(), editable=False),
        "objects": EmbeddingManager(),
        "Meta": type("Meta", (), meta),
        "__str__": lambda self: f"{self.parent_id} #{self.number}",
    }
    model = type(f"{parent.__name__}{suffix}Chunk", (models.Model,), attrs)
    model.autoembed_chunks_of = config  # type: ignore[attr-defined]
    # Importable where the parent is: `from myapp.models import DocumentChunk`.
    module = sys.modules.get(parent.__module__)
    if module is not None and not apart and not hasattr(module, model.__name__):
        setattr(module, model.__name__, model)
    return model


changes.chunk_model_maker = chunk_model  # the model a search reads a new chunk table through


def _bind(sender: type[models.Model], **kwargs: Any) -> None:
    meta = sender._meta
    if meta.abstract or meta.proxy or not meta.managed:
        return
    configs = declared_configs(sender)
    if not configs:
        return
    for config in configs:
        bound = replace(config, model_class=sender)
        names = {f.name for f in meta.local_fields}
        if bound.chunked:
            bound = replace(bound, chunk_model=chunk_model(sender, bound))
            bound.chunk_model.autoembed_chunks_of = bound
        elif bound.column not in names:
            sender.add_to_class(
                bound.column,
                HalfVectorField(
                    dimensions=bound.get_dimensions(), null=True, blank=True, editable=False
                ),
            )
            if bound.index:
                meta.indexes = [*meta.indexes, hnsw_index(meta.db_table, bound.column)]
                meta.original_attrs["indexes"] = meta.indexes
        column = bound.text_search_column
        if bound.text_search and column and bound.template_fields():
            if column not in names:
                # Stored, so ranking reads it instead of parsing every matching row's text.
                sender.add_to_class(
                    column,
                    models.GeneratedField(
                        expression=text_vector(bound, bound.text_search),
                        output_field=TsvectorField(),
                        db_persist=True,
                        editable=False,
                    ),
                )
            name = short_name(meta.db_table, bound.config_name, "fts", limit=30)
            meta.indexes = [*meta.indexes, TextSearchIndex(fields=[column], name=name)]
            meta.original_attrs["indexes"] = meta.indexes
        meta.constraints = [*meta.constraints, EmbeddingTrigger.for_config(bound)]
        meta.original_attrs["constraints"] = meta.constraints
        registry.add(bound)


class_prepared.connect(_bind, dispatch_uid="django_autoembed.bind")
