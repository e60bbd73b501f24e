"""Search by cosine distance: semantic_search, nearest, similar_to.

pgvector's HNSW scan reads two settings while it runs: ``hnsw.ef_search``
(candidates kept, recall against speed) and ``hnsw.iterative_scan`` (keep
scanning until a filtered query has its k rows). They must hold for the
search query and for nothing else, however the queryset is evaluated: a
list, ``iterator()``, ``count()``, ``exists()``, an aggregate, a subquery of
another query, a prefetch, async iteration. So the distance expression
writes the settings it needs into its SQL as a comment, and one execute
wrapper on every connection applies them around exactly the statements that
carry it, restoring the previous values afterwards (``SET LOCAL`` inside the
caller's transaction, or a transaction of its own).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from asgiref.sync import sync_to_async
from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import DEFAULT_DB_ALIAS, models, router, transaction
from django.db.models import (
    Expression,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Subquery,
)
from pgvector import HalfVector, Vector
from pgvector.django import CosineDistance

from . import conf, providers
from . import sql as sqlfiles
from .cache import VectorLRU, provider_key
from .exceptions import InvalidValue, UnknownConfig

if TYPE_CHECKING:
    from .config import EmbeddingConfig

MARK = "autoembed:hnsw"
# Chunks looked at, nearest first, to find the rows of a search over chunks (10 per row asked).
CHUNK_CANDIDATES = 200
_MARKED = re.compile(r"/\* autoembed:hnsw(?: ef_search=(\d+))? \*/")
# Strict order: an iterative scan never returns rows out of distance order.
ITERATIVE_SCAN = "strict_order"
# Reciprocal Rank Fusion: a row's score is the sum over both lists of weight / (RRF_K + rank).
RRF_K = 60
# Rows each side of a hybrid search contributes, at least (four per row asked for otherwise).
HYBRID_CANDIDATES = 40
# How the query text becomes a tsquery: web-search syntax (words ANDed, "quotes", -not, or).
TEXT_QUERY_TYPES = ("websearch", "plain", "phrase", "raw")


def text_vector(config: EmbeddingConfig, language: str) -> SearchVector:
    """The tsvector of a config's fields, as its GIN index (``text_search``) holds it."""
    return SearchVector(*config.template_fields(), config=language)


class _QueryCache(VectorLRU):
    """Query embeddings, so repeated searches cost no API call."""

    def embed(self, config: EmbeddingConfig, text: str) -> np.ndarray:
        key = (*provider_key(config), text)
        vector = self.get(key)
        if vector is None:
            from . import usage  # a models module: not imported while models are declared
            from .providers.base import as_matrix

            provider = providers.for_config(config)
            sent = _fit(provider, text)
            answer = provider.request([sent])
            vector = as_matrix(answer.vectors, 1, config.get_dimensions(), provider.name)[0]
            self.put_many([(key, vector)])
            # A query is billed like any input: it counts in usage and cost, apart.
            usage.count_query(
                router.db_for_write(config.model_class) or DEFAULT_DB_ALIAS,
                config.label,
                provider.model,
                answer.tokens if answer.tokens is not None else provider.count_tokens(sent),
            )
        return vector


query_cache = _QueryCache("QUERY_CACHE_SIZE")


def _check_text(text: str) -> None:
    """Refuse a query text Postgres cannot take, saying where the fault is."""
    nul = text.find("\x00")
    if nul >= 0:
        raise InvalidValue(
            f"The query text holds a NUL character (at {nul}), which Postgres text cannot "
            "hold; remove it."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValue(
            f"The query text holds an unpaired surrogate (at {exc.start}), which is not "
            "valid Unicode; decode the input properly or remove it."
        ) from exc


def _check_k(k: Any) -> None:
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise InvalidValue(
            f"k={k!r}: k is how many rows to return, a whole number of at least 1 "
            "(or None for every row, best first)."
        )


def _check_text_query(text: str, query_type: str, language: str | None, using: str) -> None:
    """A raw tsquery is checked by Postgres before the search, so bad syntax is InvalidValue
    saying why, not a database error when the results are read."""
    if query_type != "raw":
        return
    from django.db import DatabaseError, connections

    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(
                "select to_tsquery(%s::regconfig, %s)",
                [language or conf.get("TEXT_SEARCH"), text],
            )
    except DatabaseError as exc:
        said = str(exc).strip().splitlines()[0]
        raise InvalidValue(
            f"The query is not valid tsquery syntax ({said}); use query_type='websearch' "
            "for text as users type it."
        ) from exc


def _fit(provider: Any, text: str) -> str:
    """A query over the model's input limit is searched by its start."""
    return (
        text
        if provider.over_limit(text) is None
        else provider.head(text, provider.max_input_tokens)
    )


class SearchDistance(CosineDistance):
    """Cosine distance whose SQL carries the HNSW settings its query needs (as a comment)."""

    def __init__(
        self, expression: Any, vector: Any, *, ef_search: int | None = None, **extra: Any
    ) -> None:
        self.ef_search = int(ef_search) if ef_search else None
        super().__init__(expression, vector, **extra)
        if hasattr(self, "_constructor_args"):
            self._constructor_args = (self._constructor_args[0], {**extra, "ef_search": ef_search})

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> tuple[str, Any]:  # type: ignore[override]
        sql, params = super().as_sql(compiler, connection, *args, **extra)
        settings = f" ef_search={self.ef_search}" if self.ef_search else ""
        return f"{sql} /* {MARK}{settings} */", params


class Fused(Expression):
    """One part of a hybrid search's rank fusion (``vector_rank``, ``text_rank`` or ``score``),
    as the SQL of ``sql/search.sql`` over the row's distance, tsvector and the tsquery.

    Annotations that name one another are inlined in full by the ORM: built from Window, Case
    and Coalesce, the fused score held the distance seven times, and building and compiling it
    took about as long as the database took to run it. Each part here compiles its three
    sources once and renders the rest from a template.
    """

    contains_aggregate = False
    contains_over_clause = True  # row_number() windows: not for WHERE, and never grouped by

    def __init__(
        self,
        part: str,
        distance: Any,
        document: Any,
        query: Any,
        *,
        candidates: int,
        weights: tuple[float, float] = (1.0, 1.0),
        rrf_k: int = RRF_K,
    ) -> None:
        super().__init__(output_field=FloatField() if part == "score" else IntegerField())
        self.part = part
        self.distance, self.document, self.query = distance, document, query
        self.candidates, self.weights, self.rrf_k = int(candidates), weights, rrf_k

    def get_source_expressions(self) -> list[Any]:
        return [self.distance, self.document, self.query]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        self.distance, self.document, self.query = exprs

    def get_group_by_cols(self) -> list[Any]:
        return [c for e in self.get_source_expressions() for c in e.get_group_by_cols()]

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:  # type: ignore[override]
        sources = {
            "distance": compiler.compile(self.distance),
            "document": compiler.compile(self.document),
            "query": compiler.compile(self.query),
        }
        past = self.candidates + 1
        for side in ("vector_rank", "text_rank"):
            if self.part in (side, "score"):
                sources[side] = _render(side, sources, [past, past])
        if self.part != "score":
            return sources[self.part]
        w_vector, w_text, k = float(self.weights[0]), float(self.weights[1]), float(self.rrf_k)
        return _render("score", sources, [w_vector, k, w_text, k])


_TOKEN = re.compile(r"\{(\w+)\}|%s")


def _render(
    key: str, parts: dict[str, tuple[str, Any]], values: list[Any]
) -> tuple[str, list[Any]]:
    """A section of sql/search.sql with its {parts} filled in and its %s given ``values``,
    the parameters in the order the statement holds them."""
    template = sqlfiles.section("search.sql", key)
    params: list[Any] = []
    given = iter(values)

    def fill(token: re.Match[str]) -> str:
        if token.group(1) is None:
            params.append(next(given))
            return "%s"
        fragment, fragment_params = parts[token.group(1)]
        params.extend(fragment_params)
        return f"({fragment})"

    return _TOKEN.sub(fill, template), params


def hnsw_settings(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Execute wrapper: run a statement that holds a search with the HNSW settings it asks for."""
    if MARK not in sql:
        return execute(sql, params, many, context)
    wanted = {"hnsw.iterative_scan": ITERATIVE_SCAN}
    ef = max((int(m) for m in _MARKED.findall(sql) if m), default=None)
    if ef:
        wanted["hnsw.ef_search"] = str(ef)
    connection = context["connection"]
    if connection.get_autocommit() and not connection.in_atomic_block:
        # A transaction of its own: the local settings end with it (a server-side cursor
        # made outside a transaction is WITH HOLD: its rows are read before the commit).
        with transaction.atomic(using=connection.alias):
            _set(connection, wanted)
            return execute(sql, params, many, context)
    before = _current(connection, list(wanted))
    _set(connection, wanted)
    try:
        result = execute(sql, params, many, context)
    except Exception:
        # A failed statement aborts the transaction, and the settings go with it; an error
        # raised before the server saw the statement leaves the transaction going.
        if _usable(connection):
            _restore(connection, before)
        raise
    cursor = context["cursor"]
    if isinstance(getattr(cursor, "cursor", None), psycopg.ServerCursor):
        # A server-side cursor in a transaction: the scan runs as its rows are fetched,
        # so the settings hold until the cursor is closed.
        _restore_on_close(cursor, connection, before)
    else:
        _restore(connection, before)  # the caller's transaction goes on: give it back what it had
    return result


def _usable(connection: Any) -> bool:
    raw = connection.connection
    return raw is not None and raw.info.transaction_status != psycopg.pq.TransactionStatus.INERROR


def _restore_on_close(cursor: Any, connection: Any, before: dict[str, str | None]) -> None:
    close = cursor.close

    def close_and_restore() -> None:
        try:
            close()
        finally:
            if _usable(connection) and (
                connection.in_atomic_block or not connection.get_autocommit()
            ):
                _restore(connection, before)

    cursor.close = close_and_restore


def _current(connection: Any, names: list[str]) -> dict[str, str | None]:
    with connection.cursor() as cursor:
        cursor.execute("select " + ", ".join(["current_setting(%s, true)"] * len(names)), names)
        return dict(zip(names, cursor.fetchone(), strict=False))


def _set(connection: Any, values: dict[str, str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "select " + ", ".join(["set_config(%s, %s, true)"] * len(values)),
            [v for pair in values.items() for v in pair],
        )


def _restore(connection: Any, values: dict[str, str | None]) -> None:
    with connection.cursor() as cursor:
        for name, value in values.items():
            if (
                value is None
            ):  # pgvector was not loaded before: back to the default (names are ours)
                cursor.execute(f"set local {name} to default")
            else:
                cursor.execute("select set_config(%s, %s, true)", [name, value])


def install_wrapper(sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
    """``connection_created`` receiver: put ``hnsw_settings`` on the connection once."""
    if (
        connection is not None
        and connection.vendor == "postgresql"
        and hnsw_settings not in connection.execute_wrappers
    ):
        connection.execute_wrappers.append(hnsw_settings)


def _vector_value(cfg: EmbeddingConfig, vector: Any) -> Any:
    """A query vector as the config's column type takes it."""
    from .vectors import vector_type

    wanted = HalfVector if vector_type(cfg) == "halfvec" else Vector
    if isinstance(vector, wanted):
        return vector
    if isinstance(vector, (HalfVector, Vector)):
        vector = vector.to_numpy()
    return wanted(np.asarray(vector, dtype=np.float32))


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


class EmbeddingQuerySet(models.QuerySet):
    """QuerySet with vector search over the model's embedding configs."""

    def embedding_config(self, config: str | None = None) -> EmbeddingConfig:
        from dataclasses import replace

        from .config import registry

        chunks_of = getattr(self.model, "autoembed_chunks_of", None)
        if chunks_of is not None:  # a chunk model: search its chunks with the parent's provider
            return replace(chunks_of, model_class=self.model, chunk_tokens=None, chunk_model=None)
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
            return configs[0]
        for c in configs:
            if config in (c.config_name, c.column, c.label):
                return c
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
        cfg = self.embedding_config(config)
        value = _vector_value(cfg, vector)
        if cfg.chunked:
            return self._nearest_by_chunks(cfg, value, ef_search, candidates)
        return (
            self.filter(**{f"{cfg.column}__isnull": False})
            .annotate(distance=SearchDistance(cfg.column, value, ef_search=ef_search))
            .order_by("distance")
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
        """
        cfg = self._search_config(text, config, k)
        return self._semantic(query_cache.embed(cfg, text), k, config, ef_search)

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
        vector = await sync_to_async(query_cache.embed)(cfg, text)
        return self._semantic(vector, k, config, ef_search)

    def _search_config(
        self, text: str, config: str | None, k: int | None = None
    ) -> EmbeddingConfig:
        if not isinstance(text, str) or not text.strip():
            raise InvalidValue("A search needs a non-empty query text.")
        _check_text(text)
        _check_k(k)
        return self.embedding_config(config)

    def _semantic(
        self, vector: Any, k: int | None, config: str | None, ef_search: int | None
    ) -> EmbeddingQuerySet:
        cfg = self.embedding_config(config)
        if cfg.chunked and k:  # the k rows owning the nearest chunks, however many they own
            value = _vector_value(cfg, vector)
            rows = self._nearest_parents(cfg, value, ef_search, k)
            return self._by_chunks_among(cfg, value, ef_search, rows)[:k]
        qs = self.nearest(
            vector,
            config=config,
            ef_search=ef_search,
            candidates=max(CHUNK_CANDIDATES, 10 * (k or 0)),
        )
        return qs[:k] if k else qs

    def hybrid_search(
        self,
        text: str,
        k: int | None = None,
        *,
        config: str | None = None,
        language: str | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
        rrf_k: int = RRF_K,
        candidates: int | None = None,
        query_type: str = "websearch",
        ef_search: int | None = None,
    ) -> EmbeddingQuerySet:
        """Rows by full-text search and by meaning at once, fused by Reciprocal Rank Fusion.

        The nearest ``candidates`` rows by cosine distance and the best ``candidates`` by
        full-text rank (Postgres text search over the config's fields) are merged in one
        statement; each row scores ``weights[0] / (rrf_k + vector_rank) + weights[1] /
        (rrf_k + text_rank)``, a side it is missing from adding nothing. Rows come best
        first, annotated with ``score``, ``vector_rank``, ``text_rank`` (None where the row
        is not in that side's list), ``distance`` and ``text_score``. Filter before calling
        it: the filters then choose both sides' candidates.

        Args:
            language: text search configuration; defaults to the config's ``text_search``
                (whose GIN index then serves the query), else AUTOEMBED["TEXT_SEARCH"].
            query_type: how ``text`` becomes a tsquery: "websearch" (words ANDed, quoted
                phrases, ``or``, ``-word``), "plain", "phrase" or "raw" (tsquery syntax).

        Raises:
            InvalidValue: ``text`` is empty, or an argument is out of range (a ValueError).
            ProviderError: the provider failed to embed the query.
        """
        cfg = self._search_config(text, config, k)
        _check_text_query(text, query_type, language or cfg.text_search, self.db)
        return self._hybrid(
            cfg, query_cache.embed(cfg, text), text, k, config, language, weights, rrf_k,
            candidates, query_type, ef_search,
        )  # fmt: skip

    async def ahybrid_search(
        self,
        text: str,
        k: int | None = None,
        *,
        config: str | None = None,
        language: str | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
        rrf_k: int = RRF_K,
        candidates: int | None = None,
        query_type: str = "websearch",
        ef_search: int | None = None,
    ) -> EmbeddingQuerySet:
        """``hybrid_search`` for async code (the query is embedded off the event loop)."""
        cfg = self._search_config(text, config, k)
        await sync_to_async(_check_text_query)(
            text, query_type, language or cfg.text_search, self.db
        )
        vector = await sync_to_async(query_cache.embed)(cfg, text)
        return self._hybrid(
            cfg, vector, text, k, config, language, weights, rrf_k, candidates, query_type,
            ef_search,
        )  # fmt: skip

    def _hybrid(
        self,
        cfg: EmbeddingConfig,
        vector: Any,
        text: str,
        k: int | None,
        config: str | None,
        language: str | None,
        weights: tuple[float, float],
        rrf_k: int,
        candidates: int | None,
        query_type: str,
        ef_search: int | None,
    ) -> EmbeddingQuerySet:
        if query_type not in TEXT_QUERY_TYPES:
            raise InvalidValue(
                f"query_type={query_type!r}: choose one of {', '.join(TEXT_QUERY_TYPES)}."
            )
        if len(weights) != 2 or min(weights) < 0 or rrf_k < 0:
            raise InvalidValue("weights are two numbers >= 0 (vector, text); rrf_k is >= 0.")
        if not cfg.template_fields():
            raise InvalidValue(
                f"{cfg.label} embeds a custom content function: declare fields=[...] to "
                "search its text."
            )
        n = int(candidates or max(HYBRID_CANDIDATES, 4 * (k or 10)))
        language = language or cfg.text_search or str(conf.get("TEXT_SEARCH"))
        # The stored column where text_search declared one in this language; else parsed.
        column = cfg.text_search_column
        document: Any = (
            F(column) if column and language == cfg.text_search else text_vector(cfg, language)
        )
        # The words searched are those the query's vector was made of: a text over the
        # model's input limit is cut there (a 1.4 MB query was too big for a tsquery). A raw
        # tsquery is searched whole: cut, it would not parse.
        words = text if query_type == "raw" else _fit(providers.for_config(cfg), text)
        query = SearchQuery(words, config=language, search_type=query_type)
        if cfg.chunked:  # n rows, however many of the nearest chunks one row owns
            nearest = self.filter(
                pk__in=self._nearest_parents(cfg, _vector_value(cfg, vector), ef_search, n)
            )
        else:
            nearest = self.nearest(vector, config=config, ef_search=ef_search)
        by_text = (
            self.alias(_autoembed_document=document)
            .filter(_autoembed_document=query)
            .order_by(SearchRank(document, query).desc())
        )
        distances = self._distances(cfg, vector, ef_search)
        fused = {
            part: Fused(part, distances["distance"], document, query, candidates=n,
                        weights=weights, rrf_k=rrf_k)
            for part in ("vector_rank", "text_rank", "score")
        }  # fmt: skip
        fused_rows = (
            # One IN over the union of both sides' candidates: an OR of two INs would have the
            # planner read the whole table to test each row against both.
            self.filter(pk__in=nearest.values("pk")[:n].union(by_text.values("pk")[:n]))
            # One annotate: each clone of the query costs.
            .annotate(**distances, text_score=SearchRank(document, query), **fused)
            .order_by("-score", "distance")
        )
        return fused_rows[:k] if k else fused_rows

    def similar_to(
        self, obj: models.Model, k: int | None = None, *, config: str | None = None
    ) -> EmbeddingQuerySet:
        """Rows nearest to ``obj``'s stored embedding, ``obj`` itself excluded.

        For a chunked config, ``obj`` is represented by the mean of its chunks' vectors."""
        _check_k(k)
        cfg = self.embedding_config(config)
        if cfg.chunked:
            vector = _mean_of_chunks(cfg, obj.pk)
        else:
            vector = getattr(obj, cfg.column)
        if vector is None:
            return self.none()
        qs = self.nearest(vector, config=config).exclude(pk=obj.pk)
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
        return (
            self.filter(pk__in=rows)
            .annotate(**self._distances(cfg, value, ef_search))
            .order_by("distance")
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

    def _distances(self, cfg: EmbeddingConfig, value: Any, ef_search: int | None) -> dict:
        """The ``distance`` annotation of a row (for chunks: its best chunk's, with that
        chunk's ``chunk_text`` and ``chunk_number``)."""
        value = _vector_value(cfg, value)
        if not cfg.chunked:
            return {"distance": SearchDistance(cfg.column, value, ef_search=ef_search)}
        best = (
            cfg.chunk_model._default_manager.filter(parent=OuterRef("pk"))
            .annotate(distance=SearchDistance(cfg.column, value))
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
        return qs.defer(*columns) if columns else qs


def _configs_of(model: Any) -> list[EmbeddingConfig]:
    from .config import registry

    return [] if getattr(model, "autoembed_chunks_of", None) else registry.for_model(model)
