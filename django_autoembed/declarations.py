"""Declarations: EmbeddingConfig and the registry of configs bound to models.

A leaf: it imports nothing of this package but settings and exceptions. The
model machinery that binds a config to a model class lives in ``mixin``.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from . import settings
from .exceptions import UnknownConfig

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
        too_long: what happens to a text over the model's per-input token limit:
            ``"truncate"`` (the default: cut exactly at the limit, logged with the row and
            both counts) or ``"fail"`` (dead-lettered at once, with the limit and the fix).
        chunk_tokens: store one vector per chunk of at most this many tokens, in a child
            table ``makemigrations`` creates, instead of one vector per row.
        chunk_overlap: tokens a chunk repeats from the end of the one before (default 64).
        splitter: dotted path to ``fn(text, size, overlap, count) -> list[str]`` to split
            texts into chunks your way (``count`` counts a text's tokens).
        text_search: a Postgres text search configuration (``"english"``, ``"simple"``...):
            ``makemigrations`` adds a stored, generated ``tsvector`` column of the config's
            fields (``<name>_tsv``) with a GIN index, the full-text side of ``hybrid_search``.
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
    too_long: str = "truncate"
    chunk_tokens: int | None = None
    chunk_overlap: int = 64
    splitter: str | None = None
    text_search: str | None = None
    # Set when bound to a model class (and, for chunks, the child model made for them).
    model_class: Any = field(default=None, compare=False, repr=False)
    chunk_model: Any = field(default=None, compare=False, repr=False)
    # Set on the shadow of a config whose model is being changed (``changes``): the live
    # config (the shadow's column is typed, and its text searched, as the live one's).
    shadow_of: EmbeddingConfig | None = field(default=None, compare=False, repr=False)

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
        return str(self.model_class._meta.db_table)

    @property
    def pk_column(self) -> str:
        return str(self.model_class._meta.pk.column)

    @property
    def function_name(self) -> str:
        if self.content_function:
            return self.content_function
        if self.chunked:
            return short_name(self.table, self.config_name, "chunks", "input")
        return short_name(self.table, self.column, "input")

    @property
    def text_search_column(self) -> str | None:
        """The generated tsvector column that ``text_search`` adds (None without it)."""
        if not self.text_search:
            return None
        if self.shadow_of is not None:
            return self.shadow_of.text_search_column
        return f"{self.config_name}_tsv"

    @property
    def chunked(self) -> bool:
        return self.chunk_tokens is not None

    @property
    def chunk_table(self) -> str:
        """The child table of a chunked config (its vectors live there)."""
        return short_name(self.table, self.config_name, "chunks")

    @property
    def queue_column(self) -> str:
        """What the triggers' messages name as the embedding column (``embeddingColumn``)."""
        return f"{self.chunk_table}.{self.column}" if self.chunked else self.column

    @property
    def vector_model(self) -> Any:
        """The model whose table holds the vectors: the chunk model, or the model itself."""
        return self.chunk_model if self.chunked else self.model_class

    @property
    def generates_function(self) -> bool:
        return self.content_function is None

    # -- effective settings ----------------------------------------------

    def get_dimensions(self) -> int:
        return int(self.dimensions or settings.current().dimensions)

    def get_model(self) -> str:
        return str(self.model or settings.current().model)

    def template_fields(self) -> list[str]:
        """Field names the embedded text is made of."""
        if self.template is not None:
            return [f for _, f, _, _ in string.Formatter().parse(self.template) if f]
        return list(self.fields)


class Registry:
    """All bound configs, by label and by the job key the triggers send."""

    def __init__(self) -> None:
        self._configs: list[EmbeddingConfig] = []
        self.generation = 0  # bumped by every change, for caches of what it holds
        # Set by ``changes`` while a config's model is being changed: the configs as the
        # database serves them (the live one by the old model, and its shadow).
        self._overlay: Callable[[list[EmbeddingConfig]], list[EmbeddingConfig]] | None = None

    @property
    def overlay(self) -> Callable[[list[EmbeddingConfig]], list[EmbeddingConfig]] | None:
        return self._overlay

    @overlay.setter
    def overlay(
        self, value: Callable[[list[EmbeddingConfig]], list[EmbeddingConfig]] | None
    ) -> None:
        self._overlay = value
        self.generation += 1

    def add(self, config: EmbeddingConfig) -> None:
        self._configs = [c for c in self._configs if c.label != config.label]
        self._configs.append(config)
        self.generation += 1

    def declared(self) -> list[EmbeddingConfig]:
        """The configs as the code declares them (no change under way applied)."""
        return [c for c in self._configs if _is_installed(c.model_class)]

    def all(self) -> list[EmbeddingConfig]:
        """The configs as the database serves them: during a model change (``changes``),
        the live config by the model that made its vectors, and its shadow beside it."""
        configs = self.declared()
        return self._overlay(configs) if self._overlay is not None else configs

    def on_database(self, using: str) -> list[EmbeddingConfig]:
        """Configs whose table lives in database ``using`` (as DATABASE_ROUTERS decide)."""
        from django.db import router

        return [c for c in self.all() if router.allow_migrate_model(using, c.model_class)]

    def for_model(self, model: type[models.Model]) -> list[EmbeddingConfig]:
        concrete = model._meta.concrete_model
        return [c for c in self.all() if c.model_class is concrete and not c.shadow_of]

    def get(self, label: str) -> EmbeddingConfig:
        for config in self.all():
            if label in (config.label, f"{config.model_class._meta.label}"):
                return config
        known = ", ".join(c.label for c in self.all()) or "none"
        raise UnknownConfig(f"No embedding config {label!r}. Declared: {known}.")

    def match(self, table: str, function: str, column: str) -> EmbeddingConfig | None:
        for config in self.all():
            if (config.table, config.function_name, config.queue_column) == (
                table,
                function,
                column,
            ):
                return config
        return None


registry = Registry()


def _is_installed(model: type[models.Model]) -> bool:
    from django.apps import apps

    try:
        return apps.get_model(model._meta.label) is model
    except LookupError:
        return False
