"""EmbeddingMixin and the binding of declarations to model classes.

A model declares ``embed_fields = [...]`` (shorthand) or
``embedding_configs = [EmbeddingConfig(...), ...]``. When the model class is
prepared, each config is bound to it: the vector column and HNSW index are
added unless the model declares its own, and an ``EmbeddingTrigger``
constraint is appended so ``makemigrations`` emits the database objects.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.db import models
from django.db.models.signals import class_prepared
from pgvector.django import HalfVectorField

from .config import EmbeddingConfig, registry, short_name
from .indexes import HnswIndex
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
                configs.insert(0, EmbeddingConfig(fields=tuple(own["embed_fields"])))
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
        if bound.column not in names:
            sender.add_to_class(
                bound.column,
                HalfVectorField(
                    dimensions=bound.get_dimensions(), null=True, blank=True, editable=False
                ),
            )
            if bound.index:
                meta.indexes = [*meta.indexes, hnsw_index(meta.db_table, bound.column)]
                meta.original_attrs["indexes"] = meta.indexes
        meta.constraints = [*meta.constraints, EmbeddingTrigger.for_config(bound)]
        meta.original_attrs["constraints"] = meta.constraints
        registry.add(bound)


class_prepared.connect(_bind, dispatch_uid="django_autoembed.bind")
