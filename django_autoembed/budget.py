"""Rate budgets: tokens and requests per minute, shared by every worker through Postgres.

A provider's account allows so many tokens and requests a minute (OpenAI
enforces them per model). Each request reserves its tokens in a token bucket
kept in one row per provider, so the workers of every process and machine
share one budget: the bucket holds ``BURST`` of a minute's allowance and
refills at the rest of it spread over the minute, which keeps any 60-second
window within the limit. A request that finds the bucket short waits until
the refill covers it; one that would wait longer than its batch may is not
sent, and its rows go back to the queue unspent. A 429 anyway (another client
shares the key, the limits changed) empties the bucket for as long as
``Retry-After`` says and lowers the share of the limit used, which grows back
with every answered request. Where the settings give no limits, the
provider's ``x-ratelimit-limit-*`` headers teach them.

The arithmetic is pure (``take``, ``throttled``); ``Budget`` is the I/O.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from django.db import ProgrammingError, connections, models, transaction
from psycopg import sql

from . import settings
from . import sql as sqlfiles
from .providers.base import RateHeaders

logger = logging.getLogger(__name__)

# The share of a minute's allowance the bucket holds (sent at once after a quiet spell).
BURST = 0.05
# The share of the limits used after a 429 is multiplied by this, down to FACTOR_MIN, and
# grows back by FACTOR_STEP with each answered request.
FACTOR_DOWN = 0.7
FACTOR_MIN = 0.25
FACTOR_STEP = 0.01
# A lane reads a new batch only while the budget is promised less than this far ahead.
LOOKAHEAD_SECONDS = 10.0


class RateBudget(models.Model):
    """One provider's token bucket (tokens and requests), shared by every worker."""

    provider = models.CharField(
        max_length=255, unique=True, help_text="name, model and server; no secrets"
    )
    tokens = models.FloatField(help_text="available now; below 0: promised to waiting requests")
    requests = models.FloatField()
    at = models.FloatField(help_text="the database clock at the last change, epoch seconds")
    factor = models.FloatField(default=1.0, help_text="share of the limits in use")
    learned_tpm = models.IntegerField(null=True, blank=True, help_text="from x-ratelimit-*")
    learned_rpm = models.IntegerField(null=True, blank=True, help_text="from x-ratelimit-*")
    throttled = models.BigIntegerField(default=0, help_text="429s seen")

    class Meta:
        app_label = "django_autoembed"

    def __str__(self) -> str:
        return f"{self.provider}: {self.tokens:.0f} tokens, {self.requests:.1f} requests"


# -- the arithmetic (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Per-minute allowances (None: no limit on that count)."""

    tpm: float | None = None
    rpm: float | None = None

    def __bool__(self) -> bool:
        return bool(self.tpm or self.rpm)


@dataclass(frozen=True)
class Bucket:
    tokens: float
    requests: float
    at: float
    factor: float = 1.0


def _rates(limits: Limits, factor: float) -> tuple[float | None, float | None]:
    """Refill per second of tokens and requests."""

    def rate(limit: float | None) -> float | None:
        return limit * (1 - BURST) * factor / 60 if limit else None

    return rate(limits.tpm), rate(limits.rpm)


def capacity(limits: Limits) -> tuple[float, float]:
    """What the bucket holds when full (tokens, requests); at least one request."""
    return (
        (limits.tpm or 0) * BURST,
        max(1.0, (limits.rpm or 0) * BURST),
    )


def full(limits: Limits, now: float) -> Bucket:
    tokens, requests = capacity(limits)
    return Bucket(tokens, requests, now)


def refill(bucket: Bucket, limits: Limits, now: float) -> Bucket:
    rate_t, rate_r = _rates(limits, bucket.factor)
    cap_t, cap_r = capacity(limits)
    elapsed = max(0.0, now - bucket.at)
    tokens = min(cap_t, bucket.tokens + elapsed * rate_t) if rate_t else cap_t
    requests = min(cap_r, bucket.requests + elapsed * rate_r) if rate_r else cap_r
    return Bucket(tokens, requests, now, bucket.factor)


def take(
    bucket: Bucket, limits: Limits, now: float, tokens: float, *, max_wait: float
) -> tuple[Bucket, float | None]:
    """Reserve one request of ``tokens``: (the bucket after, seconds to wait before sending),
    or (the bucket unchanged, None) when the wait would pass ``max_wait``."""
    bucket = refill(bucket, limits, now)
    rate_t, rate_r = _rates(limits, bucket.factor)
    after = Bucket(bucket.tokens - tokens, bucket.requests - 1, now, bucket.factor)
    wait = max(
        -after.tokens / rate_t if rate_t and after.tokens < 0 else 0.0,
        -after.requests / rate_r if rate_r and after.requests < 0 else 0.0,
    )
    if wait > max_wait:
        return bucket, None
    return after, wait


def throttled(bucket: Bucket, limits: Limits, now: float, retry_after: float | None) -> Bucket:
    """A 429: send less, and nothing until ``Retry-After`` (a second if it did not say)."""
    bucket = refill(bucket, limits, now)
    factor = max(FACTOR_MIN, bucket.factor * FACTOR_DOWN)
    rate_t, rate_r = _rates(limits, factor)
    pause = max(1.0, retry_after or 0.0)
    return Bucket(
        min(bucket.tokens, -pause * rate_t) if rate_t else bucket.tokens,
        min(bucket.requests, -pause * rate_r) if rate_r else bucket.requests,
        now,
        factor,
    )


def answered(bucket: Bucket, count: int = 1) -> Bucket:
    return replace(bucket, factor=min(1.0, bucket.factor + FACTOR_STEP * count))


def promised(bucket: Bucket, limits: Limits, now: float) -> float:
    """Seconds of budget already promised to requests not sent yet."""
    bucket = refill(bucket, limits, now)
    rate_t, rate_r = _rates(limits, bucket.factor)
    return max(
        -bucket.tokens / rate_t if rate_t and bucket.tokens < 0 else 0.0,
        -bucket.requests / rate_r if rate_r and bucket.requests < 0 else 0.0,
    )


# -- the shared bucket ----------------------------------------------------------------


def _query(key: str) -> str:
    return sqlfiles.statement("budget.sql", key, budgets=sql.Identifier(RateBudget._meta.db_table))


class Budget:
    """The rate budget of one provider on one database, for every thread of this process.

    Limits come from the settings, or else from what the provider's headers said to
    any worker (kept in the shared row). While neither is known, one request goes
    first and the others wait for its answer: a backfill that starts with sixteen
    requests of 2,048 inputs each could spend a minute's budget before the first
    header arrives. Without limits, nothing is reserved and no query is made.
    """

    def __init__(self, using: str, provider: str) -> None:
        self.using = using
        self.provider = provider[:255]
        self._learned = Limits()
        self._heard = threading.Event()  # some answer (or the shared row) told the limits
        self._probing = False
        self._probe_cost: Callable[[], float] | None = None  # charged once the limits are known
        self._looked_up = False
        self._answers = 0  # answered requests not yet written into the shared factor
        self._lock = threading.Lock()

    @property
    def limits(self) -> Limits:
        tpm, rpm = settings.current().tokens_per_minute, settings.current().requests_per_minute
        if tpm or rpm:
            return Limits(float(tpm) if tpm else None, float(rpm) if rpm else None)
        return self._learned if settings.current().rate_limit_headers else Limits()

    @property
    def paces(self) -> bool:
        """Whether requests go through the budget: limits are known, or still to be learned."""
        return bool(self.limits) or (
            bool(settings.current().rate_limit_headers) and not self._heard.is_set()
        )

    @property
    def request_tokens(self) -> float | None:
        """The most tokens one request may hold so that the bucket can ever cover it."""
        tpm = self.limits.tpm
        return capacity(self.limits)[0] if tpm else None

    def take(
        self,
        tokens: float | Callable[[], float],
        *,
        max_wait: float,
        stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait until a request of ``tokens`` may be sent; False (nothing reserved) when that
        would take longer than ``max_wait`` seconds. ``tokens`` may be a function, called
        once the limits are known (counting is for paced requests only). ``stop()`` true
        ends the wait early (False: the request is not sent)."""
        started = time.monotonic()
        known = self._limits_known(max_wait)
        if known is None:  # this request goes first, to learn the limits
            if callable(tokens):
                self._probe_cost = tokens
            else:
                fixed = float(tokens)
                self._probe_cost = lambda: fixed
            return True
        if not known:
            return False
        limits = self.limits
        if not limits:
            return True
        if callable(tokens):
            tokens = tokens()
        probe, self._probe_cost = self._probe_cost, None
        if probe is not None:  # what the first request spent before the limits were known
            tokens += probe()
        max_wait = max(0.0, max_wait - (time.monotonic() - started))
        with self._lock:
            answers, self._answers = self._answers, 0
        wait = self._update(
            lambda b, now: take(answered(b, answers), limits, now, tokens, max_wait=max_wait)
        )
        if wait is None:
            return False
        until = time.monotonic() + wait
        while (left := until - time.monotonic()) > 0:  # a stopping worker does not wait it out
            if stop is not None and stop():
                return False
            time.sleep(min(left, 0.2))
        return True

    def _limits_known(self, max_wait: float) -> bool | None:
        """Whether the limits are known, None when this request is to go first and find them
        out; the others wait for its answer, at most ``max_wait`` seconds (False: too long)."""
        if (
            self._heard.is_set()
            or settings.current().tokens_per_minute
            or settings.current().requests_per_minute
        ):
            return True
        if not settings.current().rate_limit_headers:
            return True
        with self._lock:
            look_up, self._looked_up = not self._looked_up, True
        if look_up:
            self._load_learned()
            if self._heard.is_set():
                return True
        deadline = time.monotonic() + max(0.0, max_wait)
        while True:
            with self._lock:
                first, self._probing = not self._probing, True
            if first:
                return None
            # The request that went first may fail without a word on the limits: then the
            # next one goes instead.
            if self._heard.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                return False

    def heard(self, headers: RateHeaders | None, *, answered: bool = True) -> None:
        """An answer arrived (in any thread): what its headers say of the limits. Vectors
        without such headers say there are none; a failure without them says nothing, and
        another request goes to find out."""
        if headers is not None and (
            headers.limit_tokens is not None or headers.limit_requests is not None
        ):
            self._learned = Limits(
                float(headers.limit_tokens) if headers.limit_tokens else None,
                float(headers.limit_requests) if headers.limit_requests else None,
            )
        elif not answered:
            with self._lock:
                self._probing = False
            return
        self._heard.set()

    def ahead(self) -> float:
        """Seconds of this budget promised to requests not sent yet (0: none, or no limits)."""
        limits = self.limits
        if not limits:
            return 0.0
        try:
            with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
                cursor.execute(_query("read"), [self.provider])
                row = cursor.fetchone()
        except ProgrammingError:
            return 0.0
        if row is None:
            return 0.0
        tokens, requests, at, factor, now = row
        return promised(Bucket(tokens, requests, at, factor), limits, now)

    def answered(self, headers: RateHeaders | None) -> None:
        """A request got its vectors (the lane's thread): count it, and share what was learned."""
        with self._lock:
            self._answers += 1
        self.heard(headers)
        self._share_learned()

    def throttled(self, retry_after: float | None, headers: RateHeaders | None) -> None:
        """The provider answered 429: every worker holds back until ``Retry-After``."""
        self.heard(headers)
        self._share_learned()
        limits = self.limits
        if not limits:
            return
        logger.info(
            "%s: rate limited; holding back %.0f s and sending less for a while.",
            self.provider,
            max(1.0, retry_after or 0.0),
            extra={"provider": self.provider, "retry_after": retry_after},
        )
        self._update(lambda b, now: (throttled(b, limits, now, retry_after), 0.0), counted=True)

    # -- I/O ----------------------------------------------------------------------

    def _share_learned(self) -> None:
        """Keep what the answers taught in the shared row, for other processes and status:
        the limits, or 0 for "the provider reports none", so that no later process needs to
        send its first request alone to find out."""
        if not self._heard.is_set():
            return
        learned = self._learned
        if learned == getattr(self, "_shared", None):
            return
        self._shared = learned
        try:
            with transaction.atomic(using=self.using), connections[self.using].cursor() as c:
                c.execute(
                    _query("learn"),
                    {"provider": self.provider, "tpm": learned.tpm or 0, "rpm": learned.rpm or 0},
                )
        except ProgrammingError:
            pass

    def _load_learned(self) -> None:
        """What another process learned from the headers, if any."""
        try:
            with transaction.atomic(using=self.using), connections[self.using].cursor() as c:
                c.execute(_query("learned"), [self.provider])
                row = c.fetchone()
        except ProgrammingError:
            return
        if row and (row[0] is not None or row[1] is not None):  # 0: the provider reports none
            self._learned = self._shared = Limits(row[0] or None, row[1] or None)
            self._heard.set()

    def _update(self, decide: Any, counted: bool = False) -> Any:
        """Lock the shared bucket, apply ``decide(bucket, now) -> (bucket, result)``, store it."""
        limits = self.limits
        try:
            with transaction.atomic(using=self.using), connections[self.using].cursor() as c:
                c.execute(_query("lock"), [self.provider])
                row = c.fetchone()
                if row is None:  # the first of any process: a full bucket, made only once
                    cap_t, cap_r = capacity(limits)
                    c.execute(_query("create"), [self.provider, cap_t, cap_r])
                    c.execute(_query("lock"), [self.provider])
                    row = c.fetchone()
                tokens, requests, at, factor, now = row
                bucket = Bucket(tokens, requests, at, factor)
                after, result = decide(bucket, now)
                c.execute(
                    _query("store"),
                    [
                        self.provider,
                        after.tokens,
                        after.requests,
                        after.at,
                        after.factor,
                        1 if counted else 0,
                    ],
                )
            return result
        except ProgrammingError as exc:
            # No budget table (not migrated) or no grant: pace nothing rather than stop work.
            logger.warning("Rate budget unavailable for %s (%s).", self.provider, exc)
            return 0.0


def applies(provider: Any) -> bool:
    """Whether ``provider``'s requests are paced: limits set, or it reports them (OpenAI)."""
    return bool(
        settings.current().tokens_per_minute
        or settings.current().requests_per_minute
        or (
            settings.current().rate_limit_headers
            and getattr(provider, "reports_rate_limits", False)
        )
    )


_budgets: dict[tuple[str, str], Budget] = {}
_budgets_lock = threading.Lock()


def for_provider(using: str, provider: str) -> Budget:
    """This process's handle on ``provider``'s budget on database ``using``."""
    with _budgets_lock:
        budget = _budgets.get((using, provider))
        if budget is None:
            budget = _budgets[(using, provider)] = Budget(using, provider)
        return budget


def forget() -> None:
    """Drop this process's budgets (what it learned of the limits goes with them)."""
    with _budgets_lock:
        _budgets.clear()


def ahead(using: str) -> float:
    """The longest any budget this process used on ``using`` is promised ahead, in seconds."""
    with _budgets_lock:
        mine = [b for (alias, _), b in _budgets.items() if alias == using]
    return max((b.ahead() for b in mine), default=0.0)
