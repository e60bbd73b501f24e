"""Declarations: EmbeddingConfig, EmbeddingMixin and the registry of configs.

A model declares ``embed_fields = [...]`` (shorthand) or
``embedding_configs = [EmbeddingConfig(...), ...]``. When the model class is
prepared, each config is bound to it: the vector column and HNSW index are
added unless the model declares its own, and an ``EmbeddingTrigger``
constraint is appended so ``makemigrations`` emits the database objects.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.signals import class_prepared

from . import conf

if TYPE_CHECKING:
    from .providers.base import Provider

HNSW_MAX_DIMENSIONS = 4000
PG_IDENTIFIER_MAX = 63


def short_name(*parts: str, limit: int = PG_IDENTIFIER_MAX) -> str:
    """Join parts with '_', keep [a-z0-9_], and if too long cut and add a stable hash."""
    name = re.sub(r"[^a-z0-9_]+", "_", "_".join(p for p in parts if p).lower())
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}_{digest}"


@dataclass(frozen=True)
class EmbeddingConfig:
    """One embedding kept in sync for a model.

    Args:
        fields: model fields whose text is embedded, joined by blank lines.
        template: format string over field names, e.g. ``"# {title}\\n\\n{content}"``;
            NULL fields render as empty text. Takes precedence over the join of ``fields``.
        content_function: name of an existing SQL function (in the table's schema)
            taking the table's row and returning text, as in the Supabase guide.
        column: the vector column written; added as a nullable ``HalfVectorField``
            unless the model declares it.
        dimensions, model, provider: override ``AUTOEMBED`` for this config.
        clear_on_update: null the stored vector as soon as the text changes.
        name: how this config is named in commands and ``semantic_search(config=)``;
            defaults to ``column``.
        index: add an HNSW cosine index on the column (when the column is added for you).
    """

    fields: Sequence[str] = ()  # stored as a tuple
    column: str = "embedding"
    template: str | None = None
    content_function: str | None = None
    dimensions: int | None = None
    model: str | None = None
    provider: str | None = None
    clear_on_update: bool = False
    name: str | None = None
    index: bool = True
    # Set when bound to a model class.
    model_class: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields or ()))

    # -- identity ---------------------------------------------------------

    @property
    def label(self) -> str:
        meta = self.model_class._meta
        return f"{meta.label}.{self.config_name}"

    @property
    def config_name(self) -> str:
        return self.name or self.column

    @property
    def table(self) -> str:
        return self.model_class._meta.db_table

    @property
    def pk_column(self) -> str:
        return self.model_class._meta.pk.column

    @property
    def function_name(self) -> str:
        return self.content_function or short_name(self.table, self.column, "input")

    @property
    def generates_function(self) -> bool:
        return self.content_function is None

    # -- effective settings ----------------------------------------------

    def get_dimensions(self) -> int:
        return int(self.dimensions or conf.get("DIMENSIONS"))

    def get_model(self) -> str:
        return str(self.model or conf.get("MODEL"))

    def get_provider(self) -> Provider:
        from .providers import get_provider

        return get_provider(self.provider, model=self.get_model(), dimensions=self.get_dimensions())

    def template_fields(self) -> list[str]:
        """Field names the embedded text is made of."""
        if self.template is not None:
            return [f for _, f, _, _ in string.Formatter().parse(self.template) if f]
        return list(self.fields)


class Registry:
    """All bound configs, by label and by the job key the triggers send."""

    def __init__(self) -> None:
        self._configs: list[EmbeddingConfig] = []

    def add(self, config: EmbeddingConfig) -> None:
        self._configs = [c for c in self._configs if c.label != config.label]
        self._configs.append(config)

    def all(self) -> list[EmbeddingConfig]:
        return [c for c in self._configs if _is_installed(c.model_class)]

    def for_model(self, model: type[models.Model]) -> list[EmbeddingConfig]:
        concrete = model._meta.concrete_model
        return [c for c in self.all() if c.model_class is concrete]

    def get(self, label: str) -> EmbeddingConfig:
        for config in self.all():
            if label in (config.label, f"{config.model_class._meta.label}"):
                return config
        known = ", ".join(c.label for c in self.all()) or "none"
        raise LookupError(f"No embedding config {label!r}. Declared: {known}.")

    def match(self, table: str, function: str, column: str) -> EmbeddingConfig | None:
        for config in self.all():
            if (config.table, config.function_name, config.column) == (table, function, column):
                return config
        return None


registry = Registry()


def _is_installed(model: type[models.Model]) -> bool:
    from django.apps import apps

    try:
        return apps.get_model(model._meta.label) is model
    except LookupError:
        return False


class EmbeddingMixin(models.Model):
    """Mixin for models whose text is embedded automatically.

    Declare ``embed_fields = ["title", "content"]`` or
    ``embedding_configs = [EmbeddingConfig(...)]`` on the model. The default
    manager gains ``semantic_search``, ``nearest`` and ``similar_to``.
    """

    from .search import EmbeddingManager as _Manager

    objects = _Manager()

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


def _bind(sender: type[models.Model], **kwargs: Any) -> None:
    meta = sender._meta
    if meta.abstract or meta.proxy or not meta.managed:
        return
    configs = declared_configs(sender)
    if not configs:
        return
    from pgvector.django import HalfVectorField

    from .indexes import HnswIndex
    from .operations import EmbeddingTrigger

    for config in configs:
        bound = replace(config, model_class=sender)
        names = {f.name for f in meta.local_fields}
        if bound.column not in names:
            sender.add_to_class(
                bound.column,
                HalfVectorField(dimensions=bound.get_dimensions(), null=True, blank=True, editable=False),
            )
            if bound.index:
                index = HnswIndex(
                    name=short_name(meta.db_table, bound.column, "hnsw", limit=30),
                    fields=[bound.column],
                    m=16,
                    ef_construction=64,
                    opclasses=["halfvec_cosine_ops"],
                )
                meta.indexes = [*meta.indexes, index]
                meta.original_attrs["indexes"] = meta.indexes
        meta.constraints = [*meta.constraints, EmbeddingTrigger.for_config(bound)]
        meta.original_attrs["constraints"] = meta.constraints
        registry.add(bound)


class_prepared.connect(_bind, dispatch_uid="django_autoembed.bind")
