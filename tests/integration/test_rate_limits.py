"""Rate budgets: requests paced within the account's limits, shared by every worker process,
and rate limits that never cost a row an attempt."""

from django_autoembed.budget import RateBudget
from django_autoembed.failures import EmbeddingFailure
from django_autoembed.status import collect
from tests.helpers import drain, embedded_pks, prose, queue_messages, start_worker
from tests.testapp.models import Document


def make_rows(count: int, tag: str) -> list[Document]:
    return Document.objects.bulk_create(
        [Document(title=f"{tag} {n}", content=prose(2, seed=n)) for n in range(count)]
    )


def check_envelope(api, tpm: float, slack_tokens: float) -> None:
    """Tokens let in by any time since the first request stay under what a bucket of the
    budget's shape allows: its burst and its rate, and so well under the limit. The slack
    covers what went before the limits were learned and one request's jitter in arrival."""
    start = api.sent[0][0]
    total = 0
    for at, tokens in api.sent:
        total += tokens
        allowed = slack_tokens + tpm * 0.05 + tpm * 0.95 / 60 * (at - start) * 1.02
        assert total <= allowed, f"{total} tokens by {at - start:.2f} s; allowed {allowed:.0f}"


def test_two_worker_processes_share_one_budget_learned_from_the_headers(api):
    api.tpm = 240_000  # the fake sends x-ratelimit-* on every answer, as the API does
    docs = make_rows(300, "paced")  # ~40,000 tokens: about 8 s at this budget
    workers = [start_worker("--once", "--batch-size=20") for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert not EmbeddingFailure.objects.exists() and queue_messages() == []
    assert api.throttled == 0
    # Each process sent one request before it knew the limits (20 rows, ~2,600 tokens).
    check_envelope(api, 240_000, slack_tokens=3 * 3_000)
    spent = api.sent[-1][0] - api.sent[0][0]
    assert sum(t for _, t in api.sent) > 240_000 * 0.05 + 240_000 * 0.95 / 60 * spent * 0.5
    [budget] = RateBudget.objects.all()
    assert budget.learned_tpm == 240_000 and budget.throttled == 0


def test_a_limit_set_in_the_settings_paces_without_any_header(api, settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "TOKENS_PER_MINUTE": 240_000}
    docs = make_rows(200, "set")
    drain(batch_size=20)
    assert embedded_pks(Document) == {d.pk for d in docs}
    check_envelope(api, 240_000, slack_tokens=3_000)
    status = collect()
    [budget] = status.budgets
    assert budget["tokens_per_minute"] == 240_000 and budget["throttled"] == 0


def test_429s_cost_no_attempt_slow_the_workers_down_and_dead_letter_nothing(api, settings):
    # The account allows far less than the settings claim (another client shares the key).
    settings.AUTOEMBED = {**settings.AUTOEMBED, "TOKENS_PER_MINUTE": 6_000_000, "MAX_ATTEMPTS": 2}
    api.tpm, api.window = 6_000, 2.0  # 6,000 tokens per 2-second "minute"
    docs = make_rows(120, "limited")  # ~16,000 tokens
    drain(batch_size=10)
    assert embedded_pks(Document) == {d.pk for d in docs}
    assert not EmbeddingFailure.objects.exists()
    assert api.throttled > 0
    [budget] = RateBudget.objects.all()
    assert budget.throttled > 0 and budget.factor < 1


def test_once_waits_for_the_rows_a_rate_limit_put_back(api):
    docs = make_rows(20, "waited")
    api.fail_next(1, status=429, retry_after=3)  # more than --once's grace for locked rows
    drain(batch_size=5, concurrency=1)
    assert embedded_pks(Document) == {d.pk for d in docs} and queue_messages() == []
    assert not EmbeddingFailure.objects.exists()


def test_once_a_process_learned_there_are_no_limits_the_next_sends_at_once(api):
    from django_autoembed import budget, providers
    from django_autoembed.declarations import registry

    Document.objects.create(title="the first request of the first process goes alone")
    drain()
    [row] = RateBudget.objects.all()
    assert (row.learned_tpm, row.learned_rpm) == (0, 0)  # answered, with no limits said
    budget.forget()  # as a new process
    label = providers.label(registry.get("testapp.Document.embedding"))
    fresh = budget.for_provider("default", label)
    assert fresh._limits_known(0) is True and not fresh.paces
