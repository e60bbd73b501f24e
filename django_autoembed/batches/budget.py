"""The account's enqueued-token limit: how many tokens all our batches of one model may hold
at once, and each batch's share of it (pure, but for the two reads of ``records``).

OpenAI counts the input tokens of every batch not yet finished against a limit per model
and usage tier (3,000,000 tokens for text-embedding-3-small at tier 1); a batch that would
go past it fails at once with ``token_limit_exceeded``. The worker keeps the tokens of its
batches in flight under ``BATCH_QUEUE_TOKENS``, and under any lower limit the API stated
in such a refusal lately; a batch takes at most a share of the limit, so that as one
finishes the next can be submitted, and a backfill larger than the limit flows through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from .. import settings
from .records import enqueued_tokens, learned_limit

# A batch takes at most this share of the limit: four in flight, and room for the next as
# soon as one is done.
SHARE = 0.25
# A limit the API stated holds for this long; then BATCH_QUEUE_TOKENS is trusted again
# (the account may have moved up a tier).
REMEMBER = timedelta(days=1)
# What a refusal for the limit says: "... Limit: 3,000,000 enqueued tokens. ..."
_STATED = re.compile(r"limit[:\s]+([\d,_. ]+)\s*(?:enqueued\s+)?tokens", re.IGNORECASE)


@dataclass(frozen=True)
class Room:
    """What a new batch of one model may hold now."""

    limit: int  # the enqueued-token limit in force
    in_flight: int  # tokens our batches of the model hold
    batch_tokens: int  # at most this many tokens in the next batch (0: none now)

    @property
    def cap(self) -> int:
        """The most tokens any batch may hold (its share of the limit)."""
        return max(1, int(self.limit * SHARE))


def room(using: str, model: str) -> Room:
    """How many tokens the next batch of ``model`` may hold."""
    limit = int(settings.current().batch_queue_tokens)
    stated = learned_limit(using, model, timezone.now() - REMEMBER)
    if stated is not None:
        limit = min(limit, stated)
    held = enqueued_tokens(using, model)
    return Room(limit, held, max(0, min(int(limit * SHARE), limit - held)))


def stated_limit(message: str) -> int | None:
    """The limit a ``token_limit_exceeded`` error states, if it states one."""
    found = _STATED.search(message or "")
    if not found:
        return None
    digits = re.sub(r"\D", "", found.group(1))
    return int(digits) if digits else None


def status_rows(using: str, models: set[str]) -> list[dict[str, object]]:
    """The budget of each of these models, for ``autoembed_status``."""
    rows: list[dict[str, object]] = []
    for model in sorted(models):
        free = room(using, model)
        stated = learned_limit(using, model, timezone.now() - REMEMBER)
        rows.append(
            {
                "model": model,
                "in_flight": free.in_flight,
                "limit": free.limit,
                "stated": stated is not None and stated <= free.limit,
            }
        )
    return rows
