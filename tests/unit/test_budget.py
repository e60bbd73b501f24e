"""The rate budget's arithmetic: a token bucket that keeps every minute within the limits."""

import random

import pytest

from django_autoembed.budget import (
    BURST,
    FACTOR_MIN,
    Bucket,
    Limits,
    answered,
    full,
    promised,
    take,
    throttled,
)
from django_autoembed.providers.base import RateHeaders


def simulate(limits, sizes, *, minutes=10.0, seed=0):
    """Send requests of random sizes as fast as the bucket allows; (send times, sizes)."""
    rng = random.Random(seed)
    bucket, now, sent = full(limits, 0.0), 0.0, []
    while now < minutes * 60:
        size = rng.choice(sizes)
        bucket, wait = take(bucket, limits, now, size, max_wait=1e9)
        now += wait
        sent.append((now, size))
    return sent


def worst_minute(sent):
    """The most tokens sent in any 60-second window."""
    worst, lo, total = 0, 0, 0
    for t, size in sent:
        total += size
        while sent[lo][0] <= t - 60:
            total -= sent[lo][1]
            lo += 1
        worst = max(worst, total)
    return worst


def test_no_minute_exceeds_the_token_limit_and_the_limit_is_nearly_all_used():
    limits = Limits(tpm=1_000_000)
    sent = simulate(limits, [5_000, 15_000, 40_000])
    assert worst_minute(sent) <= 1_000_000
    span = sent[-1][0] - sent[0][0]
    rate = sum(size for _, size in sent[1:]) / span * 60
    assert rate >= 0.93 * 1_000_000  # 95 % of the limit, less the first burst's rounding


def test_requests_per_minute_are_kept_too():
    limits = Limits(rpm=600)
    sent = simulate(limits, [1])
    times = [t for t, _ in sent]
    worst = max(
        sum(1 for u in times[i:] if u < t + 60) for i, t in enumerate(times) if t < times[-1] - 60
    )
    assert worst <= 600 and len(times) / (times[-1] / 60) >= 0.93 * 600


def test_a_request_that_would_wait_too_long_is_not_reserved():
    limits = Limits(tpm=60_000)  # 950 tokens a second once the burst of 3,000 is spent
    bucket = full(limits, 0.0)
    bucket, wait = take(bucket, limits, 0.0, 3_000, max_wait=5)
    assert wait == 0 and bucket.tokens == pytest.approx(0)
    unchanged, wait = take(bucket, limits, 0.0, 9_500, max_wait=5)  # would wait 10 s
    assert wait is None and unchanged.tokens == bucket.tokens
    bucket, wait = take(bucket, limits, 0.0, 4_750, max_wait=5)
    assert wait == pytest.approx(5.0)
    assert promised(bucket, limits, 0.0) == pytest.approx(5.0)
    assert promised(bucket, limits, 5.0) == pytest.approx(0.0)


def test_a_429_holds_everyone_back_and_the_rate_grows_back_with_answers():
    limits = Limits(tpm=600_000)
    bucket = throttled(full(limits, 0.0), limits, 0.0, retry_after=7)
    assert bucket.factor < 1
    _, wait = take(bucket, limits, 0.0, 1, max_wait=100)
    assert wait >= 7
    for _ in range(20):
        bucket = throttled(bucket, limits, 0.0, retry_after=None)
    assert bucket.factor == FACTOR_MIN
    for _ in range(200):
        bucket = answered(bucket)
    assert bucket.factor == 1.0


def test_a_full_bucket_holds_a_burst_and_refills_no_further():
    limits = Limits(tpm=1_000_000, rpm=1_000)
    bucket = full(limits, 0.0)
    assert bucket.tokens == 1_000_000 * BURST and bucket.requests == 1_000 * BURST
    later, wait = take(Bucket(-1e9, 0, 0.0), limits, 1e9, 10, max_wait=0)
    assert wait == 0 and later.tokens == 1_000_000 * BURST - 10


def test_rate_limit_headers_are_read_as_the_api_sends_them():
    parsed = RateHeaders.parse(
        {
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-tokens": "999850",
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-reset-tokens": "9ms",
        }
    )
    assert parsed == RateHeaders(1_000_000, 3_000, 999_850, 2_999)
    assert RateHeaders.parse({"content-type": "application/json"}) is None
    assert RateHeaders.parse({"x-ratelimit-limit-tokens": ""}) is None


def test_a_failed_first_request_says_nothing_of_the_limits_and_another_goes(settings):
    from django_autoembed.budget import Budget

    settings.AUTOEMBED = {**settings.AUTOEMBED, "RATE_LIMIT_HEADERS": True}
    budget = Budget("default", "unit test provider")
    budget._looked_up = True  # no database here: nothing shared to read
    assert budget._limits_known(0) is None  # the first request goes to learn the limits
    assert budget._limits_known(0) is False  # the next ones wait for it
    budget.heard(None, answered=False)  # it failed (a 500, a timeout): no headers
    assert budget.paces and not budget.limits
    assert budget._limits_known(0) is None  # so another request goes
    budget.heard(RateHeaders(limit_tokens=90_000))
    assert budget.limits == Limits(tpm=90_000) and budget._limits_known(0) is True
