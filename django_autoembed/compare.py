"""What a change of model does to search, before searches move to it: two configs of one
model (the old one and the new one beside it) asked the same queries, and how many of each
query's top results they share (overlap@k).

The queries are the user's, or the texts of rows both configs have embedded, picked at
random. Each query is embedded once by each config's provider (through the query cache).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import connections
from psycopg import sql

from . import sql as sqlfiles
from .declarations import EmbeddingConfig
from .exceptions import InvalidValue


@dataclass(frozen=True)
class Query:
    text: str
    overlap: float  # the share of the k results both configs return
    same_first: bool


@dataclass
class Comparison:
    old: str
    new: str
    k: int
    queries: list[Query] = field(default_factory=list)
    # Rows with a vector in each config, and rows in the table.
    covered: tuple[int, int] = (0, 0)
    rows: int = 0

    @property
    def mean(self) -> float:
        return statistics.fmean(q.overlap for q in self.queries) if self.queries else 0.0

    @property
    def same_first(self) -> float:
        """The share of queries whose first result is the same row in both."""
        return sum(q.same_first for q in self.queries) / len(self.queries) if self.queries else 0.0

    def lines(self, worst: int = 3) -> list[str]:
        """What ``autoembed_compare`` prints."""
        out = [
            f"{self.old} against {self.new}: {len(self.queries)} queries, top {self.k} each.",
            f"  rows with vectors: {self.covered[0]:,} and {self.covered[1]:,} of {self.rows:,}",
            f"  overlap@{self.k}: mean {self.mean:.2f}, median "
            f"{statistics.median(q.overlap for q in self.queries) if self.queries else 0:.2f}, "
            f"lowest {min((q.overlap for q in self.queries), default=0):.2f}",
            f"  same first result: {self.same_first:.0%} of the queries",
        ]
        if self.covered[1] < self.covered[0]:
            out.append(
                f"  {self.new} has vectors for fewer rows than {self.old}: finish its backfill "
                "before reading much into the overlap."
            )
        for q in sorted(self.queries, key=lambda q: q.overlap)[:worst]:
            out.append(f"  overlap {q.overlap:.2f}: {q.text[:70]!r}")
        return out


def check_pair(old: EmbeddingConfig, new: EmbeddingConfig) -> None:
    if old.model_class is not new.model_class:
        raise InvalidValue(
            f"{old.label} and {new.label} belong to two models: compare two configs of one "
            "model (the old one and the new one beside it)."
        )


def sample_texts(config: EmbeddingConfig, other: EmbeddingConfig, n: int, using: str) -> list[str]:
    """The texts ``config`` embeds of ``n`` random rows that both configs have vectors for."""
    check_pair(config, other)
    names = {
        "table": sql.Identifier(config.table),
        "fn": sql.Identifier(config.function_name),
        "pk": sql.Identifier(config.pk_column),
        "both": _both(config, other),
    }
    with connections[using].cursor() as cursor:
        cursor.execute(sqlfiles.statement("compare.sql", "sample", **names), [n])
        return [text for (text,) in cursor.fetchall() if text and text.strip()]


def _both(config: EmbeddingConfig, other: EmbeddingConfig) -> sql.Composable:
    """The condition: the row has a vector (or chunks) in both configs."""
    parts = [_has(c) for c in (config, other)]
    return sql.SQL(" and ").join(parts)


def _has(config: EmbeddingConfig) -> sql.Composable:
    if config.chunked:
        return sqlfiles.composed(
            "compare.sql",
            "has_chunks",
            chunks=sql.Identifier(config.chunk_table),
            pk=sql.Identifier(config.pk_column),
        )
    return sqlfiles.composed("compare.sql", "has_vector", col=sql.Identifier(config.column))


def coverage(config: EmbeddingConfig, using: str) -> tuple[int, int]:
    """(rows with a vector, rows) of ``config``'s table."""
    names = {"table": sql.Identifier(config.table), "has": _has(config)}
    with connections[using].cursor() as cursor:
        cursor.execute(sqlfiles.statement("compare.sql", "coverage", **names))
        embedded, rows = cursor.fetchone()
    return int(embedded), int(rows)


def compare(
    old: EmbeddingConfig,
    new: EmbeddingConfig,
    queries: Sequence[str],
    *,
    k: int = 10,
    using: str = "default",
) -> Comparison:
    """Ask both configs each query; the overlap of their top ``k`` rows."""
    check_pair(old, new)
    if not queries:
        raise InvalidValue(
            "No query to compare with: give queries, or embed some rows in both configs first."
        )
    manager = old.model_class._default_manager.using(using)
    result = Comparison(old.label, new.label, k)
    (embedded, result.rows), (embedded_new, _) = coverage(old, using), coverage(new, using)
    result.covered = (embedded, embedded_new)
    for text in queries:
        ranked = [
            [row.pk for row in manager.semantic_search(text, k, config=config.config_name)]
            for config in (old, new)
        ]
        shared = len(set(ranked[0]) & set(ranked[1]))
        first = bool(ranked[0]) and bool(ranked[1]) and ranked[0][0] == ranked[1][0]
        # Out of the results there are: a table of fewer than k rows gives fewer.
        found = max(1, len(ranked[0]), len(ranked[1]))
        result.queries.append(Query(text, shared / found, first))
    return result
