"""The provider protocol and the pure batching helpers every provider shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class Provider:
    """Turns texts into vectors. Subclasses implement ``embed``.

    Class attributes describe the provider's limits; the processor splits
    work so that no request exceeds them.
    """

    name = "base"
    max_inputs: int = 2048
    max_input_tokens: int = 8191
    max_request_tokens: int = 300_000

    def __init__(self, *, model: str, dimensions: int) -> None:
        self.model = model
        self.dimensions = dimensions

    def embed(self, texts: list[str]) -> Sequence[Sequence[float]] | np.ndarray:
        raise NotImplementedError

    # Tokens are estimated without a tokenizer: ~3 bytes per token is below what
    # real tokenizers give for English (~4), so the estimate errs on the safe side.
    @staticmethod
    def estimate_tokens(text: str) -> int:
        return len(text.encode("utf-8")) // 3 + 1

    def truncate(self, text: str) -> str:
        limit = self.max_input_tokens * 3
        data = text.encode("utf-8")
        if len(data) <= limit:
            return text
        logger.warning(
            "Input of %d bytes is over %s's limit of about %d tokens; truncated.",
            len(data),
            self.name,
            self.max_input_tokens,
            extra={"bytes": len(data), "provider": self.name},
        )
        return data[:limit].decode("utf-8", errors="ignore")


def chunk_inputs(
    texts: Sequence[str],
    *,
    max_inputs: int,
    max_tokens: int,
    estimate: Any = Provider.estimate_tokens,
) -> Iterator[tuple[int, int]]:
    """Yield (start, end) slices of ``texts`` within the input-count and token budgets."""
    start = 0
    tokens = 0
    for i, text in enumerate(texts):
        cost = estimate(text)
        if i > start and (i - start >= max_inputs or tokens + cost > max_tokens):
            yield start, i
            start, tokens = i, 0
        tokens += cost
    if start < len(texts):
        yield start, len(texts)


def as_matrix(
    vectors: Sequence[Sequence[float]] | np.ndarray, expected: int, dimensions: int, provider: str
) -> np.ndarray:
    """Check count and length of what a provider returned; a float32 matrix."""
    from ..exceptions import DimensionMismatch, ProviderError

    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != expected:
        raise ProviderError(
            f"Provider {provider!r} returned {len(vectors)} vectors for {expected} inputs."
        )
    if matrix.shape[1] != dimensions:
        raise DimensionMismatch(
            f"Provider {provider!r} returned vectors of {matrix.shape[1]} dimensions, but the "
            f"column holds {dimensions}. Set AUTOEMBED['DIMENSIONS'] (or the config's dimensions=) "
            f"to {matrix.shape[1]} and migrate, or choose a model that gives {dimensions}."
        )
    return matrix
