"""Pacing: a provider behind the account's rate budget, shared by every worker.

``Paced`` wraps a provider for one batch's texts: before each request it takes
the request's tokens from the budget (waiting its turn, or handing the slice
back unsent when the wait would be too long), and every answer or error tells
the budget what the provider said of its limits. Without a budget that paces,
requests go straight to the provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import budget as budgets
from .. import providers
from ..exceptions import ErrorKind, ProviderError
from ..providers.base import Answer, Provider


class Paced:
    """One batch's requests to ``provider`` under its rate budget (None: not paced)."""

    def __init__(
        self,
        using: str,
        provider: Provider,
        config: Any,
        inputs: Sequence[str],
        *,
        max_wait: float,
        stopping: Callable[[], bool] | None,
    ) -> None:
        self.provider = provider
        self.inputs = inputs
        self.max_wait = max_wait
        self.stopping = stopping
        label = providers.label(config)
        self.budget = budgets.for_provider(using, label) if budgets.applies(provider) else None
        self.counts: dict[str, int] = {}
        if inputs and self.budget is not None and self.budget.limits:
            # Paced: each request's cost is counted exactly, and kept small enough for the
            # bucket to cover it.
            self.counts = {t: provider.count_tokens(t) for t in inputs}

    @property
    def paces(self) -> bool:
        return self.budget is not None and self.budget.paces

    def estimate(self) -> Callable[[str], int]:
        """What a text counts for against a request's token budget."""
        return self.counts.__getitem__ if self.counts else self.provider.request_cost

    def max_request_tokens(self) -> int:
        limit = self.provider.max_request_tokens
        if self.counts and self.budget is not None:
            limit = int(min(limit, max(1.0, self.budget.request_tokens or limit)))
        return limit

    def admit(self, lo: int, hi: int, deadline: float | None) -> bool:
        """Take the tokens of ``inputs[lo:hi]`` from the budget, waiting at most ``max_wait``
        (and not past ``deadline``); False: not now, the slice goes back unsent."""
        assert self.budget is not None
        wait = (
            self.max_wait if deadline is None else min(self.max_wait, deadline - time.monotonic())
        )

        def cost() -> float:
            return float(
                sum(self.counts.get(t) or self.provider.count_tokens(t) for t in self.inputs[lo:hi])
            )

        return self.budget.take(cost, max_wait=max(0.0, wait), stop=self.stopping)

    def request(self, texts: list[str]) -> Answer:
        """One request; the budget hears the limits it reported (in the request's thread)."""
        assert self.budget is not None
        try:
            answer = self.provider.request(texts)
        except ProviderError as exc:
            self.budget.heard(exc.limits, answered=False)
            raise
        except Exception:
            self.budget.heard(None, answered=False)
            raise
        self.budget.heard(answer.limits)
        return answer

    def heard(self, answer: Any) -> None:
        """An answer or an error, as the sending thread sees it."""
        assert self.budget is not None
        if isinstance(answer, Answer):
            self.budget.answered(answer.limits)
        elif isinstance(answer, ProviderError) and answer.kind is ErrorKind.THROTTLED:
            self.budget.throttled(answer.retry_after, answer.limits)
