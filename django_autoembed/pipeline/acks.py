"""Acknowledgements: what happened to each row, and what that means for each message.

``plan_acks`` is pure: from the rows' outcomes it decides which messages to
delete, archive, delay, hand back or split (a message whose rows fared
differently is deleted and its unfinished rows sent again as new messages
that carry the attempts they used). ``apply_acks`` is its thin I/O, run in the
transaction that wrote the vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .. import queue
from ..declarations import EmbeddingConfig
from ..failures import DeadRow, record
from ..queue import Message

# Seconds before a row the application held locked is tried again (no attempt spent).
BUSY_RETRY_SECONDS = 1


class OutcomeKind(StrEnum):
    """What happened to one row.

    ``done``: embedded, emptied or gone. ``failed``: may be retried, costs an attempt.
    ``busy``: the application held its lock; retried soon, no attempt. ``throttled``: the
    provider's rate limit; retried after its Retry-After, no attempt. ``skipped``: not
    worked on (not posted, the time budget ran out, or its provider is paused); handed
    back, no attempt. ``rejected``: can never work as it is (a text over the model's
    limit, with ``too_long="fail"``); dead-lettered now.
    """

    DONE = "done"
    FAILED = "failed"
    BUSY = "busy"
    THROTTLED = "throttled"
    SKIPPED = "skipped"
    REJECTED = "rejected"


@dataclass
class Outcome:
    """What happened to one row of one message, and why (for all but ``done``)."""

    kind: OutcomeKind
    error: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        self.kind = OutcomeKind(self.kind)  # a kind given by name becomes the member


@dataclass
class Row:
    """One row named by a message, with the config it belongs to once validated."""

    message: Message
    raw_pk: Any
    pk: Any = None
    config: EmbeddingConfig | None = None
    outcome: Outcome | None = None

    @property
    def kind(self) -> OutcomeKind:
        """Its outcome's kind (a row nobody worked on was skipped)."""
        return self.outcome.kind if self.outcome else OutcomeKind.SKIPPED


@dataclass
class AckPlan:
    """What to do with each message once its rows' outcomes are known."""

    delete: list[int] = field(default_factory=list)
    archive: list[int] = field(default_factory=list)
    # seconds -> messages hidden that long; the next read counts as an attempt
    delay: dict[int, list[int]] = field(default_factory=dict)
    release: list[int] = field(default_factory=list)  # handed back now, this read not counted
    resend: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (body, delay)
    dead: list[DeadRow] = field(default_factory=list)


@dataclass(frozen=True)
class RetryPolicy:
    """How long failed, locked and rate-limited rows wait before they are tried again."""

    max_attempts: int
    backoff: float
    backoff_max: float
    busy_retry: int = BUSY_RETRY_SECONDS

    def delay(self, attempts: int, hints: Iterable[float | None]) -> int:
        return retry_delay(attempts, hints, backoff=self.backoff, backoff_max=self.backoff_max)


def retry_delay(
    attempts: int, hints: Iterable[float | None], *, backoff: float, backoff_max: float
) -> int:
    """Seconds before a failed job's next attempt: exponential, capped, never before Retry-After."""
    delay = min(backoff * 2 ** max(0, attempts - 1), backoff_max)
    return int(max([delay, *(h for h in hints if h)]) + 0.999)


def plan_acks(
    messages: Sequence[Message],
    rows: Sequence[Row],
    *,
    max_attempts: int,
    backoff: float,
    backoff_max: float,
    busy_retry: int = BUSY_RETRY_SECONDS,
) -> AckPlan:
    """Delete, archive, delay, hand back or split each message by its rows' outcomes.

    A message whose rows all fail waits for its next attempt as it is; one whose
    rows fared differently is deleted and its unfinished rows are sent again as
    new messages that carry the attempts they have used. Rows that were busy or
    skipped spend no attempt.
    """
    policy = RetryPolicy(max_attempts, backoff, backoff_max, busy_retry)
    plan = AckPlan()
    by_message: dict[int, list[Row]] = {}
    for row in rows:
        by_message.setdefault(id(row.message), []).append(row)
    for message in messages:
        _plan_message(plan, message, by_message.get(id(message), []), policy)
    return plan


def _plan_message(plan: AckPlan, message: Message, mine: list[Row], policy: RetryPolicy) -> None:
    kinds = {r.kind for r in mine}
    if kinds <= {OutcomeKind.DONE} and mine:
        plan.delete.append(message.msg_id)
        return
    if kinds == {OutcomeKind.SKIPPED} or not mine:
        plan.release.append(message.msg_id)
        return
    attempts = message.attempts  # this read included
    failed = [r for r in mine if r.kind is OutcomeKind.FAILED]
    rejected = [r for r in mine if r.kind is OutcomeKind.REJECTED]
    doomed = rejected + (failed if attempts >= policy.max_attempts else [])
    retry = [r for r in failed if r not in doomed]
    delay = policy.delay(attempts, (r.outcome.retry_after for r in failed if r.outcome))
    if retry and len(retry) == len(mine):  # the next read of this message counts the attempt
        plan.delay.setdefault(delay, []).append(message.msg_id)
        return
    plan.dead += [_dead_row(message, row, attempts) for row in doomed]
    if retry:
        plan.resend.append((message.body_for([r.raw_pk for r in retry], attempts), delay))
    _resend_unspent(plan, message, mine, policy)
    (plan.archive if doomed else plan.delete).append(message.msg_id)


def _resend_unspent(plan: AckPlan, message: Message, mine: list[Row], policy: RetryPolicy) -> None:
    """Rows that spent no attempt go back as new messages: locked, rate-limited, skipped."""
    spent = message.attempts - 1  # this read does not count for them
    busy = [r.raw_pk for r in mine if r.kind is OutcomeKind.BUSY]
    if busy:  # a row locked by the application is no failure
        plan.resend.append((message.body_for(busy, spent), policy.busy_retry))
    throttled = [r for r in mine if r.kind is OutcomeKind.THROTTLED]
    if throttled:  # nor is a rate limit: wait as the provider asks
        wait = policy.delay(1, (r.outcome.retry_after for r in throttled if r.outcome))
        plan.resend.append((message.body_for([r.raw_pk for r in throttled], spent), wait))
    skipped = [r.raw_pk for r in mine if r.kind is OutcomeKind.SKIPPED]
    if skipped:
        plan.resend.append((message.body_for(skipped, spent), 0))


def _dead_row(message: Message, row: Row, attempts: int) -> DeadRow:
    target = message.target
    return DeadRow(
        config=row.config.label if row.config else "unknown",
        table=row.config.table if row.config else (target.table if target else ""),
        row_id=row.raw_pk,
        job=message.body_for([row.raw_pk], 0)
        if isinstance(message.body, dict)
        else {"body": message.body},
        error=(row.outcome.error if row.outcome else None) or "failed",
        attempts=attempts,
    )


def apply_acks(cursor: Any, plan: AckPlan) -> None:
    """Carry out a plan with the cursor of the transaction that wrote the vectors."""
    queue.delete(cursor, plan.delete)
    queue.archive(cursor, plan.archive)
    queue.release(cursor, plan.release)
    for seconds, ids in plan.delay.items():
        queue.set_vt(cursor, ids, seconds)
    for body, seconds in plan.resend:
        queue.send_batch(cursor, [body], seconds)
    record(cursor, plan.dead)
