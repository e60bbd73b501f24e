"""The provider protocol and the pure batching helpers every provider shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateHeaders:
    """What a provider's ``x-ratelimit-*`` response headers say (None: not said)."""

    limit_tokens: int | None = None
    limit_requests: int | None = None
    remaining_tokens: int | None = None
    remaining_requests: int | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str] | None) -> RateHeaders | None:
        if not headers:
            return None

        def number(name: str) -> int | None:
            try:
                return int(float(headers.get(f"x-ratelimit-{name}") or ""))
            except ValueError:
                return None

        found = cls(
            number("limit-tokens"),
            number("limit-requests"),
            number("remaining-tokens"),
            number("remaining-requests"),
        )
        return found if found != cls() else None


@dataclass
class Answer:
    """A provider's answer to one request: the vectors, the tokens it billed (None: it did
    not say), and the rate limits it reported."""

    vectors: Any
    tokens: int | None = None
    limits: RateHeaders | None = None


@dataclass
class BatchOutput:
    """What a finished batch's output and error files said, per request line."""

    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # line -> matrix
    errors: dict[int, str] = field(default_factory=dict)  # line -> why
    tokens: int = 0


@runtime_checkable
class BatchAPI(Protocol):
    """A provider that embeds through a batch API (files of requests, results within a day,
    at a lower price): what ``process_embeddings --batch-api`` needs of it."""

    def submit_batch(
        self, requests: list[list[str]], *, custom_prefix: str, metadata: dict[str, str]
    ) -> str:
        """Submit one request per list of texts, custom ids ``{custom_prefix}-{n}``; the id."""

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        """The batch as the provider describes it (``status``, file ids, counts)."""

    def find_batch(self, metadata: dict[str, str]) -> str | None:
        """The id of a recent batch created with this metadata (a submission cut short)."""

    def batch_results(self, info: dict[str, Any], *, custom_prefix: str) -> BatchOutput:
        """What a finished batch's files say."""

    def cancel_batch(self, batch_id: str) -> None:
        """Cancel a batch (one created after another worker gave its jobs back)."""


class Provider:
    """Turns texts into vectors. Subclasses implement ``embed``.

    Class attributes describe the provider's limits; the processor splits work so that
    no request exceeds them. A provider with a tokenizer overrides ``count_tokens`` and
    ``head`` (exact counts); one without gets an estimate that errs on the safe side.
    """

    name = "base"
    max_inputs: int = 2048
    max_input_tokens: int = 8191
    max_request_tokens: int = 300_000
    # Whether count_tokens is exact (the provider's own tokenizer) or an estimate.
    exact_tokens = False
    # Tokens the tokenizer adds to every input (a BERT model's [CLS] and [SEP]).
    special_tokens = 0
    # (count, head) as dotted paths of module-level functions doing what count_tokens and
    # head do, for a pool of processes to split long texts with (None: split in-process).
    tokenizer: tuple[str, str] | None = None
    # Whether that tokenizer never makes a token across a space following a non-space
    # character (cl100k_base): the splitter then counts joined texts by their joins.
    joins_at_spaces = False
    # Whether answers carry x-ratelimit-* headers to learn the account's limits from.
    reports_rate_limits = False

    def __init__(self, *, model: str, dimensions: int) -> None:
        self.model = model
        self.dimensions = dimensions

    def embed(self, texts: list[str]) -> Sequence[Sequence[float]] | np.ndarray:
        raise NotImplementedError

    def request(self, texts: list[str]) -> Answer:
        """One request: vectors and, where the provider reports them, usage and rate limits."""
        return Answer(self.embed(texts))

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``. Without a tokenizer: ~3 bytes a token, below what tokenizers
        give for English (~4), so the estimate errs on the safe side."""
        return len(text.encode("utf-8")) // 3 + 1

    def head(self, text: str, tokens: int) -> str:
        """The longest start of ``text`` that is at most ``tokens`` tokens."""
        data = text.encode("utf-8")
        return data[: max(0, (tokens - 1) * 3)].decode("utf-8", errors="ignore")

    def process_tokenizer(self) -> tuple[str, str] | None:
        """``tokenizer``, if it is what this provider counts with: a subclass that overrides
        ``count_tokens`` or ``head`` below the class naming it, or on the instance, gets
        None (split in-process)."""
        if self.tokenizer is None or self._owner("tokenizer") > min(
            self._owner("count_tokens"), self._owner("head")
        ):
            return None
        return self.tokenizer

    def splits_at_spaces(self) -> bool:
        """``joins_at_spaces``, if it was said of the tokenizer in use (a subclass naming
        another tokenizer, or counting its own way, does not inherit it)."""
        return (
            self.joins_at_spaces
            and self.process_tokenizer() is not None
            and self._owner("joins_at_spaces") <= self._owner("tokenizer")
        )

    def _owner(self, name: str) -> int:
        """How far down the MRO the class defining ``name`` is (0: this class; -1: set on
        the instance itself, which comes before any class)."""
        if name in getattr(self, "__dict__", {}):
            return -1
        return next(n for n, cls in enumerate(type(self).__mro__) if name in cls.__dict__)

    def request_cost(self, text: str) -> int:
        """What ``text`` counts for against a request's token budget: its bytes while that
        is small (never fewer than its tokens for byte-level tokenizers), else its tokens."""
        size = len(text.encode("utf-8")) + self.special_tokens
        return size if self.exact_tokens and size <= SMALL_INPUT_BYTES else self.count_tokens(text)

    def over_limit(self, text: str) -> int | None:
        """``text``'s token count when it is over ``max_input_tokens``, else None."""
        size = len(text.encode("utf-8")) + self.special_tokens
        if self.exact_tokens and size <= self.max_input_tokens:
            return None  # a token is at least one byte, and the special ones are counted
        tokens = self.count_tokens(text)
        return tokens if tokens > self.max_input_tokens else None


_ESTIMATE = Provider(model="", dimensions=0).count_tokens

# Inputs up to this many bytes are counted by their bytes when packing requests: a
# byte-level tokenizer never makes more tokens than bytes, and counting costs CPU.
SMALL_INPUT_BYTES = 4096


def chunk_inputs(
    texts: Sequence[str],
    *,
    max_inputs: int,
    max_tokens: int,
    estimate: Any = None,
) -> Iterator[tuple[int, int]]:
    """Yield (start, end) slices of ``texts`` within the input-count and token budgets
    (``estimate`` counts a text's tokens; by default, bytes / 3)."""
    estimate = estimate or _ESTIMATE
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
