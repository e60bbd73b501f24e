"""Search by cosine distance: semantic_search, nearest, similar_to (and hybrid_search,
from ``hybrid``), on the default manager of every declared model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, TypeVar, cast

import django
import numpy as np
import psycopg
from asgiref.sync import sync_to_async
from django.db import ProgrammingError, connections, models, transaction
from django.db.models import Expression, ExpressionWrapper, F, OuterRef, Subquery
from django.db.models.lookups import IsNull
from pgvector.django import HalfVectorField

from . import changes, identity
from .exceptions import InvalidValue, UnknownConfig
from .hnsw.scan import SearchDistance
from .hybrid import HybridSearch
from .query import check_k, check_text, query_cache, vector_value
from .saving import loaded_vectors

if TYPE_CHECKING:
    from .declarations import EmbeddingConfig

T = TypeVar("T")


def _quote_alias(compiler: Any, alias: str) -> str:
    """A table alias as the compiler writes it in FROM: Django 6.1 quotes every alias
    (``quote_name``); before, aliases it made up (``T3``) were left bare."""
    if django.VERSION >= (6, 1):
        return str(compiler.quote_name(alias))
    return str(compiler.quote_name_unless_alias(alias))


class ShadowColumn(Expression):
    """A vector column that is not a model field: the shadow a model change fills."""

    def __init__(self, table: str, column: str, dimensions: int) -> None:
        super().__init__(output_field=HalfVectorField(dimensions=dimensions))
        self.table = table
        self.column = column
        self.alias: str | None = None

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        resolved = self.copy()
        resolved.alias = query.get_initial_alias() if query is not None else None
        return resolved

    def relabeled_clone(self, relabels: Any) -> ShadowColumn:
        clone = self.copy()
        clone.alias = relabels.get(self.alias, self.alias)
        return clone

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        column = connection.ops.quote_name(changes.column_now(self.table, self.column))
        if self.alias is None:
            return column, ()
        return f"{_quote_alias(compiler, self.alias)}.{column}", ()

    def get_group_by_cols(self) -> list[Any]:
        return [self]


def vector_column(cfg: EmbeddingConfig) -> Any:
    """What a search reads a config's vectors from: its field, or a change's shadow."""
    if cfg.shadow_of:
        return ShadowColumn(cfg.table, cfg.column, cfg.get_dimensions())
    return F(cfg.column)


# Chunks looked at, nearest first, to find the rows of a search over chunks (10 per row asked).
CHUNK_CANDIDATES = 200


def _mean_of_chunks(cfg: EmbeddingConfig, pk: Any) -> np.ndarray | None:
    """The normalised mean of a row's chunk vectors: the row as a whole, for "more like this"."""
    assert cfg.chunk_model is not None
    vectors = [
        np.asarray(v.to_list() if hasattr(v, "to_list") else v, dtype=np.float32)
        for v in cfg.chunk_model._default_manager.filter(parent_id=pk).values_list(
            cfg.column, flat=True
        )
        if v is not None
    ]
    if not vectors:
        return None
    mean = np.mean(vectors, axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm else None


class EmbeddingQuerySet(HybridSearch, models.QuerySet[Any]):
    """QuerySet with vector search over the model's embedding configs."""

    def _fetch_all(self) -> None:
        if self._result_cache is not None:  # read already (prefetches may be left to do)
            super()._fetch_all()
            return
        live = getattr(self.query, "autoembed_reads_live", None)
        if live is not None:  # built during a model change
            changes.check_live_read(self.db, live)
        self._renamed_meanwhile(super()._fetch_all)

    def count(self) -> int:
        return self._renamed_meanwhile(super().count)  # as a Paginator counts a search

    def exists(self) -> bool:
        return self._renamed_meanwhile(super().exists)

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        aggregate = super().aggregate
        return self._renamed_meanwhile(lambda: aggregate(*args, **kwargs))

    def _renamed_meanwhile(self, run: Callable[[], T]) -> T:
        """``run()``, again once if a model change's cutover renamed what it reads meanwhile:
        a search of the new column (or chunk table), cut over since this process last looked
        (or while the search waited for the cutover's lock), fails once; compiled again, it
        reads the same vectors under their new name. Inside a transaction (ATOMIC_REQUESTS),
        such a search runs in a savepoint, so that error does not end the transaction."""
        connection = connections[self.db]
        guarded = getattr(self.query, "autoembed_reads_shadow", False) and (
            connection.in_atomic_block
        )

        def attempt() -> T:
            with transaction.atomic(using=self.db) if guarded else nullcontext():
                return run()

        try:
            return attempt()
        except ProgrammingError as exc:
            retry = (
                isinstance(
                    exc.__cause__, (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable)
                )
                and changes.any_known()
                and (guarded or not connection.in_atomic_block)
            )
            if not retry:
                raise
            changes.refresh(self.db, 0)
            return attempt()

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """As Django's; the instances then keep the vectors the worker writes later out of a
        plain ``save()``, as saved ones do (``saving``)."""
        created = super().bulk_create(objs, *args, **kwargs)
        for obj in created:
            obj._autoembed_loaded = loaded_vectors(obj)
        return created

    def embedding_config(self, config: str | None = None) -> EmbeddingConfig:
        from dataclasses import replace

        from .declarations import registry

        chunks_of = getattr(self.model, "autoembed_chunks_of", None)
        if chunks_of is not None:  # a chunk model: search its chunks with the parent's provider
            chunks: EmbeddingConfig = chunks_of
            return replace(chunks, model_class=self.model, chunk_tokens=None, chunk_model=None)
        shadows = [c for c in registry.all() if c.shadow_of and c.model_class is self.model]
        for c in shadows:  # a model change's shadow, named (autoembed_compare, hybrid_search)
            if config in (c.config_name, c.column, c.label):
                return c
        configs = registry.for_model(self.model)
        if not configs:
            raise UnknownConfig(
                f"{self.model._meta.label} declares no embedding (embed_fields or "
                "embedding_configs)."
            )
        if config is None:
            if len(configs) > 1:
                names = ", ".join(c.config_name for c in configs)
                raise InvalidValue(
                    f"{self.model._meta.label} has several embeddings; pass config= one of: "
                    f"{names}."
                )
            return changes.searched(configs[0])
        for c in configs:
            if config in (c.config_name, c.column, c.label):
                return changes.searched(c)
        names = ", ".join(c.config_name for c in configs)
        raise InvalidValue(
            f"{self.model._meta.label} has no embedding {config!r}; choose from: {names}."
        )

    def nearest(
        self,
        vector: Any,
        *,
        config: str | None = None,
        ef_search: int | None = None,
        candidates: int = CHUNK_CANDIDATES,
    ) -> EmbeddingQuerySet:
        """Rows ordered by cosine distance to ``vector``, annotated with ``distance``.

        For a config stored in chunks, a row's distance is its best chunk's, and the row
        is annotated with that chunk's ``chunk_text`` and ``chunk_number`` too; the rows
        are found among those owning the ``candidates`` chunks nearest to ``vector``.
        """
        changes.refresh(self.db)  # while a model change is under way: its state now
        return self._nearest(self.embedding_config(config), vector, ef_search, candidates)

    def _nearest(
        self,
        cfg: EmbeddingConfig,
        vector: Any,
        ef_search: int | None,
        candidates: int = CHUNK_CANDIDATES,
    ) -> EmbeddingQuerySet:
        """``nearest`` for a config resolved once: a search whose query was embedded for a
        config reads that config's vectors, whatever a model change did since."""
        value = vector_value(cfg, vector)
        if cfg.chunked:
            return self._nearest_by_chunks(cfg, value, ef_search, candidates)
        return cast(
            EmbeddingQuerySet,
            changes.mark_search(
                cfg,
                self.filter(IsNull(vector_column(cfg), False))
                .annotate(distance=SearchDistance(vector_column(cfg), value, ef_search=ef_search))
                .order_by("distance"),
            ),
        )

    def semantic_search(
        self,
        text: str,
        k: int | None = None,
        *,
        config: str | None = None,
        ef_search: int | None = None,
    ) -> EmbeddingQuerySet:
        """Rows nearest in meaning to ``text`` (embedded once, cached), best first.

        Raises:
            InvalidValue: ``text`` is empty (a ValueError).
            ProviderError: the provider failed; the message names it.
            ModelChanged: the stored vectors were made by another model than the declared
                one (the message says the ways out).
        """
        cfg = self._search_config(text, config, k)
        return self._semantic(cfg, self._query_vector(cfg, text), k, ef_search)

    async def asemantic_search(
        self,
        text: str,
        k: int | None = None,
        *,
        config: str | None = None,
        ef_search: int | None = None,
    ) -> EmbeddingQuerySet:
        """``semantic_search`` for async code: the query is embedded off the event loop; the
        queryset it returns is evaluated with ``async for`` (or ``await qs.afirst()``...)."""
        cfg = self._search_config(text, config, k)
        vector = await sync_to_async(self._query_vector)(cfg, text)
        return self._semantic(cfg, vector, k, ef_search)

    def _search_config(
        self, text: str, config: str | None, k: int | None = None
    ) -> EmbeddingConfig:
        if not isinstance(text, str) or not text.strip():
            raise InvalidValue("A search needs a non-empty query text.")
        check_text(text)
        check_k(k)
        changes.refresh(self.db)  # while a model change is under way: its state now
        return self.embedding_config(config)

    def _query_vector(self, cfg: EmbeddingConfig, text: str) -> Any:
        """The query's vector (cached), once the stored vectors are known to come from the
        declared model: compared with another model's, it would rank rows at random."""
        identity.verify(self.db, cfg)
        return query_cache.embed(cfg, text)

    def _semantic(
        self, cfg: EmbeddingConfig, vector: Any, k: int | None, ef_search: int | None
    ) -> EmbeddingQuerySet:
        if cfg.chunked and k:  # the k rows owning the nearest chunks, however many they own
            value = vector_value(cfg, vector)
            rows = self._nearest_parents(cfg, value, ef_search, k)
            return self._by_chunks_among(cfg, value, ef_search, rows)[:k]
        qs = self._nearest(cfg, vector, ef_search, max(CHUNK_CANDIDATES, 10 * (k or 0)))
        return qs[:k] if k else qs

    def similar_to(
        self, obj: models.Model, k: int | None = None, *, config: str | None = None
    ) -> EmbeddingQuerySet:
        """Rows nearest to ``obj``'s stored embedding, ``obj`` itself excluded.

        For a chunked config, ``obj`` is represented by the mean of its chunks' vectors."""
        check_k(k)
        changes.refresh(self.db)  # while a model change is under way: its state now
        cfg = self.embedding_config(config)
        if cfg.chunked:
            vector = _mean_of_chunks(cfg, obj.pk)
        else:
            vector = (
                getattr(obj, cfg.column)
                if not cfg.shadow_of
                else self.filter(pk=obj.pk)
                .annotate(_vector=vector_column(cfg))
                .values_list("_vector", flat=True)
                .first()
            )
        if vector is None:
            return self.none()
        qs = self._nearest(cfg, vector, None).exclude(pk=obj.pk)
        return qs[:k] if k else qs

    def _nearest_chunks(self, cfg: EmbeddingConfig, value: Any, ef_search: int | None) -> Any:
        """The chunks of these rows, nearest to ``value`` first."""
        chunks = cfg.chunk_model._default_manager.all()
        if self.query.where:  # filters on the rows: only their chunks are candidates
            chunks = chunks.filter(parent__in=self.values("pk"))
        return chunks.annotate(
            distance=SearchDistance(cfg.column, value, ef_search=ef_search)
        ).order_by("distance")

    def _nearest_by_chunks(
        self, cfg: EmbeddingConfig, value: Any, ef_search: int | None, candidates: int
    ) -> EmbeddingQuerySet:
        nearest = self._nearest_chunks(cfg, value, ef_search)[:candidates]
        return self._by_chunks_among(cfg, value, ef_search, nearest.values("parent_id"))

    def _by_chunks_among(
        self, cfg: EmbeddingConfig, value: Any, ef_search: int | None, rows: Any
    ) -> EmbeddingQuerySet:
        return cast(
            EmbeddingQuerySet,
            changes.mark_search(
                cfg,
                self.filter(pk__in=rows)
                .annotate(**self._distances(cfg, value, ef_search))
                .order_by("distance"),
            ),
        )

    def _nearest_parents(
        self, cfg: EmbeddingConfig, value: Any, ef_search: int | None, k: int
    ) -> list[Any]:
        """The keys of the ``k`` rows whose best chunks are nearest, best first: chunks are
        looked at in growing numbers until ``k`` rows own them or none is left (one long
        document can own every one of the nearest few hundred)."""
        nearest = self._nearest_chunks(cfg, value, ef_search)
        size = max(CHUNK_CANDIDATES, 10 * k)
        while True:
            parents = list(nearest[:size].values_list("parent_id", flat=True))
            found = list(dict.fromkeys(parents))
            if len(found) >= k or len(parents) < size:
                return found[:k]
            size *= 4

    def _distances(self, cfg: EmbeddingConfig, value: Any, ef_search: int | None) -> dict[str, Any]:
        """The ``distance`` annotation of a row (for chunks: its best chunk's, with that
        chunk's ``chunk_text`` and ``chunk_number``)."""
        value = vector_value(cfg, value)
        if not cfg.chunked:
            return {"distance": SearchDistance(vector_column(cfg), value, ef_search=ef_search)}
        # Exact over the row's own chunks: ordered by the bare distance, the planner may walk
        # the chunks' HNSW graph for the row's nearest chunk instead, which is approximate
        # (after many rewrites it ranked a row by another of its chunks) and slow on a large
        # table. The ``+ 0`` is an order no index can serve, in the selected expression itself
        # so that each chunk's distance is computed once.
        exact = ExpressionWrapper(
            SearchDistance(cfg.column, value) + 0.0, output_field=models.FloatField()
        )
        best = (
            cfg.chunk_model._default_manager.filter(parent=OuterRef("pk"))
            .annotate(distance=exact)
            .order_by("distance")
        )
        return {
            "distance": Subquery(best.values("distance")[:1]),
            "chunk_text": Subquery(best.values("text")[:1]),
            "chunk_number": Subquery(best.values("number")[:1]),
        }

    # The HNSW scan reads its settings while rows are fetched; a server-side cursor
    # inside a transaction would fetch them after the settings were given back.
    # A search's results are few: fetch them in one go.

    def iterator(self, chunk_size: int | None = None) -> Iterator[Any]:
        if not self._is_search():
            return super().iterator(chunk_size)
        return iter(self.all())

    async def aiterator(self, chunk_size: int = 2000) -> AsyncIterator[Any]:
        if not self._is_search():
            async for item in super().aiterator(chunk_size):
                yield item
            return
        async for item in self.all():
            yield item

    def _is_search(self) -> bool:
        return any(isinstance(a, SearchDistance) for a in self.query.annotations.values())


class EmbeddingManager(models.Manager.from_queryset(EmbeddingQuerySet)):  # type: ignore[misc]
    """Default manager of models using EmbeddingMixin."""

    def get_queryset(self) -> EmbeddingQuerySet:
        # The stored tsvector of text_search is the database's to read: rows are not
        # fetched with it (it is loaded on access, like any deferred field).
        qs = super().get_queryset()
        columns = [
            c.text_search_column
            for c in _configs_of(self.model)
            if c.text_search_column and c.template_fields()
        ]
        return cast(EmbeddingQuerySet, qs.defer(*columns) if columns else qs)


def _configs_of(model: Any) -> list[EmbeddingConfig]:
    from .declarations import registry

    return [] if getattr(model, "autoembed_chunks_of", None) else registry.for_model(model)
