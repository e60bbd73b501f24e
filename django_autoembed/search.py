"""Search by cosine distance: semantic_search, nearest, similar_to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import connections, models, transaction
from pgvector import HalfVector, Vector
from pgvector.django import CosineDistance

from .cache import VectorLRU, provider_key
from .exceptions import InvalidValue, UnknownConfig

if TYPE_CHECKING:
    from .config import EmbeddingConfig


class _QueryCache(VectorLRU):
    """Query embeddings, so repeated searches cost no API call."""

    def embed(self, config: EmbeddingConfig, text: str) -> np.ndarray:
        key = (*provider_key(config), text)
        vector = self.get(key)
        if vector is None:
            from .providers import for_config
            from .providers.base import as_matrix

            provider = for_config(config)
            vector = as_matrix(provider.embed([provider.truncate(text)]), 1, config.get_dimensions(),
                               provider.name)[0]
            self.put_many([(key, vector)])
        return vector


query_cache = _QueryCache("QUERY_CACHE_SIZE")


class EmbeddingQuerySet(models.QuerySet):
    """QuerySet with vector search over the model's embedding configs."""

    _ef_search: int | None = None

    def _clone(self) -> EmbeddingQuerySet:
        clone = super()._clone()  # type: ignore[misc]
        clone._ef_search = self._ef_search
        return clone

    def embedding_config(self, config: str | None = None) -> EmbeddingConfig:
        from .config import registry

        configs = registry.for_model(self.model)
        if not configs:
            raise UnknownConfig(f"{self.model._meta.label} declares no embedding (embed_fields or embedding_configs).")
        if config is None:
            if len(configs) > 1:
                names = ", ".join(c.config_name for c in configs)
                raise InvalidValue(f"{self.model._meta.label} has several embeddings; pass config= one of: {names}.")
            return configs[0]
        for c in configs:
            if config in (c.config_name, c.column, c.label):
                return c
        names = ", ".join(c.config_name for c in configs)
        raise InvalidValue(f"{self.model._meta.label} has no embedding {config!r}; choose from: {names}.")

    def nearest(self, vector: Any, *, config: str | None = None, ef_search: int | None = None) -> EmbeddingQuerySet:
        """Rows ordered by cosine distance to ``vector``, annotated with ``distance``."""
        cfg = self.embedding_config(config)
        from .vectors import vector_type

        value = HalfVector(np.asarray(vector, dtype=np.float32)) if vector_type(cfg) == "halfvec" \
            else Vector(np.asarray(vector, dtype=np.float32))
        qs = self.filter(**{f"{cfg.column}__isnull": False}).annotate(
            distance=CosineDistance(cfg.column, value)
        ).order_by("distance")
        qs._ef_search = ef_search
        return qs

    def semantic_search(self, text: str, k: int | None = None, *, config: str | None = None,
                        ef_search: int | None = None) -> EmbeddingQuerySet:
        """Rows nearest in meaning to ``text`` (embedded once, cached), best first.

        Raises:
            ValueError: ``text`` is empty.
            ProviderError: the provider failed; the message names it.
        """
        if not isinstance(text, str) or not text.strip():
            raise InvalidValue("semantic_search needs a non-empty query text.")
        cfg = self.embedding_config(config)
        qs = self.nearest(query_cache.embed(cfg, text), config=config, ef_search=ef_search)
        return qs[:k] if k else qs

    def similar_to(self, obj: models.Model, k: int | None = None, *, config: str | None = None) -> EmbeddingQuerySet:
        """Rows nearest to ``obj``'s stored embedding, ``obj`` itself excluded."""
        cfg = self.embedding_config(config)
        vector = getattr(obj, cfg.column)
        if vector is None:
            return self.none()
        qs = self.nearest(vector, config=config).exclude(pk=obj.pk)
        return qs[:k] if k else qs

    def _fetch_all(self) -> None:
        if self._result_cache is not None or not self.query.order_by or "distance" not in self.query.annotations:
            return super()._fetch_all()  # type: ignore[misc]
        # Settings for this query only: strict-order iterative scans keep filtered
        # searches returning k rows; ef_search trades speed for recall.
        with transaction.atomic(using=self.db), connections[self.db].cursor() as cursor:
            cursor.execute("select set_config('hnsw.iterative_scan', 'strict_order', true)")
            if self._ef_search:
                cursor.execute("select set_config('hnsw.ef_search', %s, true)", [str(int(self._ef_search))])
            super()._fetch_all()  # type: ignore[misc]


class EmbeddingManager(models.Manager.from_queryset(EmbeddingQuerySet)):  # type: ignore[misc]
    """Default manager of models using EmbeddingMixin."""
