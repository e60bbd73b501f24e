"""plan_acks: what becomes of each message once its rows' outcomes are known."""

from types import SimpleNamespace

from django_autoembed.pipeline.acks import Outcome, Row, plan_acks, retry_delay
from django_autoembed.queue import Message

TARGET = {
    "schema": "public",
    "table": "docs",
    "contentFunction": "docs_input",
    "embeddingColumn": "embedding",
}
CONFIG = SimpleNamespace(label="app.Doc.embedding", table="docs")


def rows(message, *outcomes):
    return [
        Row(message, pk, pk, CONFIG, o) for pk, o in zip(message.row_ids, outcomes, strict=True)
    ]


def plan(messages, all_rows, max_attempts=3):
    return plan_acks(messages, all_rows, max_attempts=max_attempts, backoff=5, backoff_max=600)


def test_done_rows_delete_their_message():
    message = Message(1, 1, {"ids": [1, 2], **TARGET})
    result = plan([message], rows(message, Outcome("done"), Outcome("done")))
    assert result.delete == [1] and not (
        result.archive or result.delay or result.resend or result.dead
    )


def test_a_message_whose_rows_all_failed_waits_its_backoff_as_it_is():
    message = Message(1, 2, {"ids": [1, 2], **TARGET})
    result = plan(
        [message], rows(message, Outcome("failed", "500"), Outcome("failed", "500", retry_after=30))
    )
    assert result.delay == {30: [1]} and not result.delete  # Retry-After beats the 10 s backoff


def test_mixed_outcomes_split_the_message_and_carry_the_attempts():
    message = Message(1, 2, {"ids": [1, 2, 3, 4], "attempts": 0, **TARGET})
    outcomes = (Outcome("done"), Outcome("failed", "x"), Outcome("busy"), Outcome("skipped"))
    result = plan([message], rows(message, *outcomes))
    assert result.delete == [1]
    assert ({"id": 2, "attempts": 2, **TARGET}, 10) in result.resend  # this read counted
    assert ({"id": 3, "attempts": 1, **TARGET}, 1) in result.resend  # a lock is no failure
    assert ({"id": 4, "attempts": 1, **TARGET}, 0) in result.resend  # not worked on


def test_a_rate_limited_row_waits_as_asked_and_spends_nothing():
    message = Message(1, 3, {"ids": [1, 2], **TARGET})
    outcomes = (Outcome("throttled", "429", retry_after=12), Outcome("done"))
    result = plan([message], rows(message, *outcomes), max_attempts=3)
    assert result.delete == [1] and not result.dead and not result.archive
    assert result.resend == [({"id": 1, "attempts": 2, **TARGET}, 12)]


def test_the_last_attempt_archives_and_dead_letters_each_failed_row():
    message = Message(1, 3, {"ids": [1, 2], **TARGET})
    result = plan([message], rows(message, Outcome("failed", "400 bad"), Outcome("done")))
    assert result.archive == [1] and not result.delete
    [dead] = result.dead
    assert (dead.config, dead.row_id, dead.attempts, dead.error) == (
        "app.Doc.embedding",
        1,
        3,
        "400 bad",
    )
    assert dead.job == {"id": 1, **TARGET}


def test_messages_not_worked_on_are_handed_back():
    message = Message(1, 1, {"ids": [1, 2], **TARGET})
    assert plan([message], rows(message, Outcome("skipped"), Outcome("skipped"))).release == [1]
    assert plan([message], []).release == [1]


def test_a_malformed_message_is_dead_lettered_as_it_came():
    message = Message(1, 3, ["not", "an", "object"])
    result = plan(
        [message], [Row(message, None, outcome=Outcome("failed", "job is not a JSON object"))]
    )
    assert result.archive == [1] and result.dead[0].job == {"body": ["not", "an", "object"]}


def test_retry_delay_grows_caps_and_honours_retry_after():
    assert [retry_delay(a, [], backoff=5, backoff_max=600) for a in (1, 2, 3, 9)] == [
        5,
        10,
        20,
        600,
    ]
    assert retry_delay(1, [None, 42.5], backoff=5, backoff_max=600) == 43
