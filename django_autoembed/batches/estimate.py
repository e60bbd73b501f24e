"""What the backlog will cost, before any of it is spent: per config, the rows to embed
(no vector yet, or queued), their tokens (counted on a random sample of their texts,
with the provider's tokenizer) and the price at the embeddings API's and the Batch
API's rates. Reads only; sends nothing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from django.db import connections
from psycopg import sql

from .. import providers, queue, settings, usage
from .. import sql as sqlfiles
from ..backfill import row_names
from ..declarations import EmbeddingConfig
from ..usage import UsageMode
from .budget import SHARE
from .filling import LINE_OVERHEAD, MAX_FILE_BYTES, MAX_INPUTS

# Texts counted per config: enough for a few per cent of error on the mean.
SAMPLE = 1000


@dataclass(frozen=True)
class Estimate:
    """One config's backlog, as ``--estimate`` prints it."""

    label: str
    model: str
    rows: int
    sampled: int
    tokens: int
    api_price: float | None  # US dollars (None: PRICES has no price for the model)
    batch_price: float | None
    inputs: int = 0  # texts to embed: the rows, or their chunks
    size: int = 0  # bytes they make in the Batch API's input files

    @property
    def batches(self) -> int:
        """Batches of the Batch API it takes: each holds a share of BATCH_QUEUE_TOKENS, at
        most MAX_INPUTS texts and a file of at most MAX_FILE_BYTES, whichever binds first."""
        if not self.tokens:
            return 0
        per_batch = max(1, int(settings.current().batch_queue_tokens * SHARE))
        return max(
            math.ceil(self.tokens / per_batch),
            math.ceil(self.inputs / MAX_INPUTS),
            math.ceil(self.size / MAX_FILE_BYTES),
        )


def estimate(
    configs: list[EmbeddingConfig], *, using: str = "default", every_row: bool = False
) -> list[Estimate]:
    """The backlog of each config; ``every_row``: every row with text, as a re-embed of the
    whole table would send (``autoembed_reembed``)."""
    return [_one(config, using, every_row) for config in configs]


def _one(config: EmbeddingConfig, using: str, every_row: bool = False) -> Estimate:
    provider = providers.for_config(config)
    with connections[using].cursor() as cursor:
        names = _names(cursor, config, using)
        if every_row:
            names["unembedded"] = sql.SQL("true")
        target = [config.table, config.function_name, config.queue_column]
        cursor.execute(sqlfiles.statement("batches.sql", "estimate_rows", **names), target)
        rows = int(cursor.fetchone()[0])
        cursor.execute(
            sqlfiles.statement("batches.sql", "estimate_sample", **names), [*target, SAMPLE]
        )
        texts = [t for (t,) in cursor.fetchall() if t]
    whole = [provider.count_tokens(t) for t in texts]
    pieces = [1] * len(whole)
    if config.chunked:
        assert config.chunk_tokens is not None
        # Overlapping chunks repeat some tokens of the one before.
        step = max(1, config.chunk_tokens - config.chunk_overlap)
        pieces = [max(1, math.ceil(c / step)) for c in whole]
        counts = [c + (n - 1) * config.chunk_overlap for c, n in zip(whole, pieces, strict=True)]
    else:  # a text past the model's limit is embedded by its head
        counts = [min(c, provider.max_input_tokens or c) for c in whole]
    # In the file, as JSON escapes it: the share of the text sent, and each input's line.
    sizes = [
        len(json.dumps(t)) * (sent / max(1, c)) + n * LINE_OVERHEAD
        for t, c, sent, n in zip(texts, whole, counts, pieces, strict=True)
    ]
    tokens = round(sum(counts) / len(counts) * rows) if counts else 0
    inputs = round(sum(pieces) / len(pieces) * rows) if pieces else rows
    size = round(sum(sizes) / len(sizes) * rows) if sizes else 0
    model = config.get_model()
    return Estimate(
        config.label,
        model,
        rows,
        len(texts),
        tokens,
        usage.price(model, UsageMode.API, tokens),
        usage.price(model, UsageMode.BATCH, tokens),
        inputs,
        size,
    )


def _names(cursor: Any, config: EmbeddingConfig, using: str) -> dict[str, Any]:
    _schema, names = row_names(cursor, config, using)
    names["queue"] = queue.tables()["queue"]
    names["queued"] = sqlfiles.composed("batches.sql", "queued_key", **names)
    return names


def render(estimates: list[Estimate], title: str = "Backlog to embed") -> list[str]:
    """The lines ``process_embeddings --estimate`` prints."""
    lines = [f"{title} (nothing was sent; tokens estimated from a sample of texts):"]
    for e in estimates:
        lines.append(
            f"  {e.label} ({e.model}): {e.rows:,} rows, ~{e.tokens:,} tokens "
            f"(sample of {e.sampled:,}); embeddings API {_dollars(e.api_price)}, "
            f"Batch API {_dollars(e.batch_price)} in ~{e.batches:,} batches"
        )
    rows = sum(e.rows for e in estimates)
    tokens = sum(e.tokens for e in estimates)
    api = _total([e.api_price for e in estimates])
    batch = _total([e.batch_price for e in estimates])
    lines.append(
        f"Total: {rows:,} rows, ~{tokens:,} tokens; embeddings API {_dollars(api)}, "
        f"Batch API {_dollars(batch)}."
    )
    if None in (api, batch) and tokens:
        lines.append("Add the missing models' prices to AUTOEMBED['PRICES'] (dollars a 1M tokens).")
    return lines


def _total(prices: list[float | None]) -> float | None:
    return None if any(p is None for p in prices) else sum(p or 0.0 for p in prices)


def _dollars(amount: float | None) -> str:
    return "price unknown" if amount is None else f"${amount:,.4f}"
