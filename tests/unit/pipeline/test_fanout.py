"""FanOut: the provider requests for a list of texts, and what each answer means."""

import numpy as np
import pytest

from django_autoembed.exceptions import DimensionMismatch, ProviderError
from django_autoembed.pipeline.fanout import FanOut
from django_autoembed.providers.base import chunk_inputs


def fanout(texts, per_request=2, dims=4, column="halfvec"):
    slices = chunk_inputs(texts, max_inputs=per_request, max_tokens=10**9)
    return FanOut(texts, slices, dimensions=dims, provider="fake", column_type=column)


def answer_all(f, call):
    """Answer every request the way ``call`` says, in order, until nothing is left."""
    while todo := f.take():
        for lo, hi in todo:
            try:
                f.answered(lo, hi, call(f.texts[lo:hi]))
            except Exception as exc:
                f.answered(lo, hi, exc)


def vectors(texts, dims=4):
    return np.ones((len(texts), dims), np.float32)


def test_slices_respect_the_input_count_and_every_text_gets_a_vector():
    texts = [f"t{i}" for i in range(5)]
    assert list(chunk_inputs(texts, max_inputs=2, max_tokens=10**9)) == [(0, 2), (2, 4), (4, 5)]
    f = fanout(texts, per_request=2)
    answer_all(f, vectors)
    assert f.requests == 3 and f.answers == 3 and not f.errors
    assert all(v is not None for v in f.vectors)


def test_an_input_error_is_split_until_the_bad_text_stands_alone():
    texts = [f"t{i}" for i in range(8)] + ["POISON"]
    f = fanout(texts, per_request=16)

    def call(batch):
        if "POISON" in batch:
            raise ProviderError("400 bad input", kind="input")
        return vectors(batch)

    answer_all(f, call)
    assert list(f.errors) == [8] and f.requests <= 2 * 4 + 1  # halving: log2(9) rounds
    assert all(f.vectors[i] is not None for i in range(8))


def test_a_configuration_error_stops_everything():
    f = fanout([f"t{i}" for i in range(6)], per_request=2)
    first = f.take()
    f.answered(*first[0], ProviderError("401", kind="config"))
    assert f.config_error is not None and f.take() == []


def test_wrong_dimensions_are_a_configuration_error():
    f = fanout(["a", "b"], dims=4)
    f.answered(*f.take()[0], np.ones((2, 3), np.float32))
    assert isinstance(f.config_error, DimensionMismatch)


def test_every_request_failing_in_passing_is_an_outage_not_the_rows_fault():
    f = fanout(["a", "b", "c", "d"], per_request=2)
    answer_all(f, lambda batch: (_ for _ in ()).throw(ProviderError("503", retry_after=7)))
    assert f.unavailable is not None and f.unavailable.retry_after == 7
    g = fanout(["a", "b", "c", "d"], per_request=2)
    calls = iter([vectors(["a", "b"]), ProviderError("500")])
    answer_all(g, lambda batch: _raise_or_return(next(calls)))
    assert g.unavailable is None and sorted(g.errors) == [
        2,
        3,
    ]  # others got through: the rows' fault


def _raise_or_return(value):
    if isinstance(value, Exception):
        raise value
    return value


@pytest.mark.parametrize(
    ("value", "column"), [(np.nan, "halfvec"), (1e6, "halfvec"), (np.inf, "vector")]
)
def test_a_vector_the_column_cannot_store_fails_its_own_text(value, column):
    f = fanout(["ok", "bad"], column=column)
    matrix = vectors(["ok", "bad"])
    matrix[1, 0] = value
    f.answered(*f.take()[0], matrix)
    assert list(f.errors) == [1] and f.errors[1].kind == "input"


def test_a_custom_providers_own_exception_is_a_passing_failure():
    f = fanout(["a"])
    f.answered(*f.take()[0], RuntimeError("boom"))
    assert f.errors[0].kind == "transient" and "boom" in str(f.errors[0])


def test_slices_the_time_budget_left_unsent_are_handed_back_not_failed():
    f = fanout(["a", "b"])
    f.expired(f.take())
    assert f.skipped == {0, 1} and not f.errors and f.unavailable is None


def test_rate_limits_alone_are_an_outage_too():
    f = fanout(["a", "b"], per_request=1)
    answer_all(
        f, lambda batch: _raise_or_return(ProviderError("429", kind="throttled", retry_after=3))
    )
    assert f.unavailable is not None and f.unavailable.kind == "throttled"
