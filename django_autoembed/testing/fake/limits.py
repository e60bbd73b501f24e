"""What the fake refuses, decided without I/O: the real API's limits, its per-minute rate
limits over a sliding minute, and the inputs a test marked to be rejected."""

from __future__ import annotations

from dataclasses import dataclass

# The real API's limits, enforced as it enforces them: a request that breaks one is refused
# whole with a 400. Tokens are counted with cl100k_base, the embedding models' tokenizer.
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000

# Models the fake knows, with the most dimensions each gives and whether it takes `dimensions`.
MODELS = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}

Window = list[tuple[float, int]]  # (time.monotonic(), tokens) of the last minute's requests


def count_tokens(text: str) -> int:
    from ...providers.openai import encoding

    return len(encoding().encode_ordinary(text))


def check_limits(texts: list[str], *, exact: bool = True) -> tuple[int, str | None]:
    """(the request's tokens, why the real API would refuse it or None).

    With ``exact``, every text is counted with the tokenizer, as the API bills it;
    without, a short text is estimated at 4 bytes a token, and counted only where its
    size could break a limit (a token is at least one byte).
    """
    if len(texts) > MAX_INPUTS:
        return 0, f"'$.input' is invalid: at most {MAX_INPUTS} inputs a request, got {len(texts)}."
    sizes = [len(text.encode("utf-8")) for text in texts]
    if exact:
        from ...providers.openai import encoding

        counts = [len(ids) for ids in encoding().encode_ordinary_batch(texts)]
    else:
        counts = [
            count_tokens(t) if n > MAX_INPUT_TOKENS else n // 4 + 1
            for t, n in zip(texts, sizes, strict=True)
        ]
    for n, tokens in enumerate(counts):
        if tokens > MAX_INPUT_TOKENS:
            return 0, (
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                f"you requested {tokens} tokens ({tokens} in your prompt; input {n}). Please "
                "reduce your prompt."
            )
    total = sum(counts)
    if not exact and sum(sizes) > MAX_REQUEST_TOKENS:
        total = sum(count_tokens(text) for text in texts)
    if total > MAX_REQUEST_TOKENS:
        return total, f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request."
    return total, None


def rejected(texts: list[str], poison: set[str]) -> bool:
    """Whether an input holds one of the ``poison`` substrings or is empty."""
    return any(p in t for t in texts for p in poison) or any(not t for t in texts)


@dataclass(frozen=True)
class RateLimit:
    """A request weighed against the per-minute limits."""

    window: Window  # the sliding minute's requests, this one among them if it may go
    refusal: str | None  # a 429's message, or None when the request may go
    headers: dict[str, str]  # the x-ratelimit-* headers (and retry-after) the answer carries


def rate_limit(
    window: Window,
    *,
    now: float,
    tokens: int,
    rpm: int | None,
    tpm: int | None,
    minute: float,
) -> RateLimit:
    """Weigh a request of ``tokens`` at ``now`` against ``rpm`` and ``tpm`` (None: no limit)
    over the ``minute`` seconds before it."""
    window = [(t, n) for t, n in window if now - t < minute]
    used_requests = len(window)
    used_tokens = sum(n for _, n in window)
    over_requests = rpm is not None and used_requests + 1 > rpm
    over_tokens = tpm is not None and used_tokens + tokens > tpm
    if not (over_requests or over_tokens):
        window.append((now, tokens))
        used_requests, used_tokens = used_requests + 1, used_tokens + tokens
    reset = minute - (now - window[0][0]) if window else 1.0
    headers = {
        "x-ratelimit-limit-requests": str(rpm or ""),
        "x-ratelimit-remaining-requests": str(max(0, (rpm or 0) - used_requests)),
        "x-ratelimit-reset-requests": f"{reset:.0f}s",
        "x-ratelimit-limit-tokens": str(tpm or ""),
        "x-ratelimit-remaining-tokens": str(max(0, (tpm or 0) - used_tokens)),
        "x-ratelimit-reset-tokens": f"{reset:.0f}s",
    }
    if not (over_requests or over_tokens):
        return RateLimit(window, None, headers)
    what = "requests" if over_requests else "tokens"
    limit = rpm if over_requests else tpm
    message = f"Rate limit reached for {what} per min: Limit {limit}. Please try again in "
    return RateLimit(
        window,
        f"{message}{reset:.0f}s.",
        {"retry-after": f"{max(1, round(reset))}", **headers},
    )
