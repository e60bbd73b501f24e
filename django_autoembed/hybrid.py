"""Hybrid search: full-text and meaning at once, fused by Reciprocal Rank Fusion."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

from asgiref.sync import sync_to_async
from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db.models import Expression, F, FloatField, IntegerField

from . import changes, providers, settings
from . import sql as sqlfiles
from .exceptions import InvalidValue
from .query import check_text_query, fit, vector_value

if TYPE_CHECKING:
    from .declarations import EmbeddingConfig

# Reciprocal Rank Fusion: a row's score is the sum over both lists of weight / (RRF_K + rank).
RRF_K = 60
# Rows each side of a hybrid search contributes, at least (four per row asked for otherwise).
HYBRID_CANDIDATES = 40
# How the query text becomes a tsquery: web-search syntax (words ANDed, "quotes", -not, or).
TEXT_QUERY_TYPES = ("websearch", "plain", "phrase", "raw")


def text_vector(config: EmbeddingConfig, language: str) -> SearchVector:
    """The tsvector of a config's fields, as its GIN index (``text_search``) holds it."""
    return SearchVector(*config.template_fields(), config=language)


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
            return cast(tuple[str, list[Any]], sources[self.part])
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


class VectorSide(Protocol):
    """What the queryset that searches by meaning gives hybrid search (EmbeddingQuerySet)."""

    db: str

    def filter(self, *args: Any, **kwargs: Any) -> Any: ...
    def alias(self, *args: Any, **kwargs: Any) -> Any: ...
    def _nearest(self, cfg: Any, vector: Any, ef_search: int | None) -> Any: ...
    def _search_config(self, text: str, config: str | None, k: int | None) -> Any: ...
    def _query_vector(self, cfg: Any, text: str) -> Any: ...
    def _distances(self, cfg: Any, value: Any, ef_search: int | None) -> dict[str, Any]: ...
    def _nearest_parents(self, cfg: Any, value: Any, ef_search: int | None, k: int) -> Any: ...


class HybridSearch:
    """``hybrid_search`` for EmbeddingQuerySet (which supplies the vector side)."""

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
    ) -> Self:
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
            ModelChanged: the stored vectors were made by another model than the declared one.
        """
        qs = cast(VectorSide, self)
        cfg = qs._search_config(text, config, k)
        check_hybrid(cfg, query_type, weights, rrf_k)
        check_text_query(text, query_type, language or cfg.text_search, qs.db)
        return fused(  # type: ignore[no-any-return]
            qs, cfg, qs._query_vector(cfg, text), text, k,
            Fusion(language, weights, rrf_k, candidates, query_type, ef_search),
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
    ) -> Self:
        """``hybrid_search`` for async code (the query is embedded off the event loop)."""
        qs = cast(VectorSide, self)
        cfg = qs._search_config(text, config, k)
        check_hybrid(cfg, query_type, weights, rrf_k)
        await sync_to_async(check_text_query)(text, query_type, language or cfg.text_search, qs.db)
        vector = await sync_to_async(qs._query_vector)(cfg, text)
        return fused(  # type: ignore[no-any-return]
            qs, cfg, vector, text, k,
            Fusion(language, weights, rrf_k, candidates, query_type, ef_search),
        )  # fmt: skip


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search fuses its two sides (hybrid_search's keyword arguments)."""

    language: str | None
    weights: tuple[float, float]
    rrf_k: int
    candidates: int | None
    query_type: str
    ef_search: int | None


def check_hybrid(
    cfg: EmbeddingConfig, query_type: str, weights: tuple[float, float], rrf_k: int
) -> None:
    """Refuse arguments a hybrid search cannot use, before anything is paid for."""
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


def _text_side(cfg: EmbeddingConfig, text: str, how: Fusion) -> tuple[Any, SearchQuery]:
    """The row's tsvector and the query's tsquery."""
    language = how.language or cfg.text_search or str(settings.current().text_search)
    # The stored column where text_search declared one in this language; else parsed.
    column = cfg.text_search_column
    document: Any = (
        F(column) if column and language == cfg.text_search else text_vector(cfg, language)
    )
    # The words searched are those the query's vector was made of: a text over the model's
    # input limit is cut there (a 1.4 MB query was too big for a tsquery). A raw tsquery is
    # searched whole: cut, it would not parse.
    words = text if how.query_type == "raw" else fit(providers.for_config(cfg), text)
    return document, SearchQuery(words, config=language, search_type=how.query_type)


def fused(
    qs: VectorSide,
    cfg: EmbeddingConfig,
    vector: Any,
    text: str,
    k: int | None,
    how: Fusion,
) -> Any:
    """The rows of both sides' candidates, annotated with their fused ranks, best first."""
    n = int(how.candidates or max(HYBRID_CANDIDATES, 4 * (k or 10)))
    document, query = _text_side(cfg, text, how)
    if cfg.chunked:  # n rows, however many of the nearest chunks one row owns
        parents = qs._nearest_parents(cfg, vector_value(cfg, vector), how.ef_search, n)
        nearest = qs.filter(pk__in=parents)
    else:
        nearest = qs._nearest(cfg, vector, how.ef_search)  # the config the query was made for
    by_text = (
        qs.alias(_autoembed_document=document)
        .filter(_autoembed_document=query)
        .order_by(SearchRank(document, query).desc())
    )
    distances = qs._distances(cfg, vector, how.ef_search)
    parts = {
        part: Fused(part, distances["distance"], document, query, candidates=n,
                    weights=how.weights, rrf_k=how.rrf_k)
        for part in ("vector_rank", "text_rank", "score")
    }  # fmt: skip
    rows = (
        # One IN over the union of both sides' candidates: an OR of two INs would have the
        # planner read the whole table to test each row against both.
        qs.filter(pk__in=nearest.values("pk")[:n].union(by_text.values("pk")[:n]))
        # One annotate: each clone of the query costs.
        .annotate(**distances, text_score=SearchRank(document, query), **parts)
        .order_by("-score", "distance")
    )
    rows = changes.mark_search(cfg, rows)
    return rows[:k] if k else rows
