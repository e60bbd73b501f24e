"""The query text of a search: what Postgres cannot take, what the model cannot take, and
the query's embedding, cached and counted in usage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import DEFAULT_DB_ALIAS, router, transaction
from pgvector import HalfVector, Vector

from . import providers, settings
from . import sql as sqlfiles
from .cache import VectorLRU, provider_key
from .exceptions import InvalidValue

if TYPE_CHECKING:
    from .declarations import EmbeddingConfig


class _QueryCache(VectorLRU):
    """Query embeddings, so repeated searches cost no API call."""

    def embed(self, config: EmbeddingConfig, text: str) -> np.ndarray:
        key = (*provider_key(config), text)
        vector = self.get(key)
        if vector is None:
            from . import usage  # a models module: not imported while models are declared
            from .providers.base import as_matrix

            provider = providers.for_config(config)
            sent = fit(provider, text)
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


query_cache = _QueryCache(lambda: settings.current().query_cache_size)


def check_text(text: str) -> None:
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


def check_k(k: Any) -> None:
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise InvalidValue(
            f"k={k!r}: k is how many rows to return, a whole number of at least 1 "
            "(or None for every row, best first)."
        )


def check_text_query(text: str, query_type: str, language: str | None, using: str) -> None:
    """A raw tsquery is checked by Postgres before the search, so bad syntax is InvalidValue
    saying why, not a database error when the results are read."""
    if query_type != "raw":
        return
    from django.db import DatabaseError, connections

    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(
                sqlfiles.section("search.sql", "check_tsquery"),
                [language or settings.current().text_search, text],
            )
    except DatabaseError as exc:
        said = str(exc).strip().splitlines()[0]
        raise InvalidValue(
            f"The query is not valid tsquery syntax ({said}); use query_type='websearch' "
            "for text as users type it."
        ) from exc


def fit(provider: Any, text: str) -> str:
    """A query over the model's input limit is searched by its start."""
    return (
        text
        if provider.over_limit(text) is None
        else provider.head(text, provider.max_input_tokens)
    )


def vector_value(cfg: EmbeddingConfig, vector: Any) -> Any:
    """A query vector as the config's column type takes it."""
    from .vectors import vector_type

    wanted = HalfVector if vector_type(cfg) == "halfvec" else Vector
    if isinstance(vector, wanted):
        return vector
    if isinstance(vector, (HalfVector, Vector)):
        vector = vector.to_numpy()
    return wanted(np.asarray(vector, dtype=np.float32))
