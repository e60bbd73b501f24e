"""queue: Message, the one place that reads a message's ids, target and attempts; and the
jobs the endpoint is posted."""

import pytest

from django_autoembed.exceptions import InvalidValue
from django_autoembed.queue import Message, Target, parse_posted

TARGET = {
    "schema": "public",
    "table": "docs",
    "contentFunction": "docs_input",
    "embeddingColumn": "embedding",
}


def test_one_row_in_the_guides_shape():
    message = Message(7, 1, {"id": 5, **TARGET})
    assert message.row_ids == [5] and message.problem is None
    assert message.target == Target("public", "docs", "docs_input", "embedding")
    assert message.attempts == 1


def test_many_rows_and_the_attempts_they_carry():
    message = Message(7, 2, {"ids": [1, "2", 3], "attempts": 3, **TARGET})
    assert message.row_ids == [1, "2", 3]
    assert message.prior_attempts == 3 and message.attempts == 5
    assert message.names(2) and message.names("3") and not message.names(4)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([1, 2], "not a JSON object"),
        ({**TARGET}, "needs 'id'"),
        ({"ids": [], **TARGET}, "needs 'id'"),
        ({"ids": [1, None], **TARGET}, "needs 'id'"),
        ({"ids": [1, [2]], **TARGET}, "needs 'id'"),
        ({"id": True, **TARGET}, "needs 'id'"),
        ({"id": 1, **TARGET, "table": ""}, "string values"),
        ({"id": 1, **TARGET, "schema": 3}, "string values"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body, problem):
    message = Message(1, 1, body)
    assert problem in message.problem
    if "id" in problem:
        assert message.row_ids == []


@pytest.mark.parametrize("attempts", [-1, "2", True, None])
def test_nonsense_attempts_count_as_none(attempts):
    assert Message(1, 1, {"id": 1, "attempts": attempts, **TARGET}).attempts == 1


def test_a_body_for_some_rows_keeps_the_target_and_drops_the_rest():
    message = Message(7, 2, {"ids": [1, 2, 3], "attempts": 1, "extra": "kept", **TARGET})
    assert message.body_for([2], 4) == {"id": 2, "attempts": 4, "extra": "kept", **TARGET}
    assert message.body_for([1, 3], 0) == {"ids": [1, 3], "extra": "kept", **TARGET}


def test_new_builds_what_a_trigger_sends_and_from_row_reads_text_json():
    target = Target("public", "docs", "docs_input", "embedding")
    assert Message.new(target, [9]).body == {"id": 9, **TARGET}
    assert Message.from_row((3, 1, '{"id": 9}')).body == {"id": 9}


JOB_TARGET = {"schema": "public", "table": "t", "contentFunction": "f", "embeddingColumn": "c"}


def test_valid_jobs_pass_and_packed_ones_too():
    jobs = [{"jobId": 1, "id": 5, **JOB_TARGET}, {"jobId": 2, "ids": [1, "x"], **JOB_TARGET}]
    posted = parse_posted(jobs)
    assert [job.body for job in posted] == jobs
    assert [(job.job_id, job.row_ids) for job in posted] == [(1, [5]), (2, [1, "x"])]
    assert posted[1].target.table == JOB_TARGET["table"]


@pytest.mark.parametrize(
    ("job", "says"),
    [
        ({"jobId": 1, **JOB_TARGET}, "lacks id"),
        ({"jobId": 1, "ids": [], **JOB_TARGET}, "1 to 10000"),
        ({"jobId": 1, "ids": [1, {}], **JOB_TARGET}, "each of ids must be"),
        ({"jobId": 0, "id": 1, **JOB_TARGET}, "positive"),
        ({"jobId": 1, "id": 2**64, **JOB_TARGET}, "out of range"),
        ({"jobId": 1, "id": 1, **JOB_TARGET, "table": "x" * 256}, "at most 255"),
    ],
)
def test_invalid_jobs_say_what_is_wrong(job, says):
    with pytest.raises(InvalidValue, match=says):
        parse_posted([job])
