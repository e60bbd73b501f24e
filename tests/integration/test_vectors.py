"""Vectors travel to Postgres as one binary array, exact for both column types."""

import numpy as np
import pytest
from pgvector import HalfVector, Vector

from django_autoembed.vectors import VectorArray, adapt
from django_autoembed.worker import connect


@pytest.mark.parametrize(
    ("type_name", "dtype", "cls"),
    [("halfvec", np.float16, HalfVector), ("vector", np.float32, Vector)],
)
@pytest.mark.parametrize("nulls", [0, 2])
def test_array_round_trips_with_trailing_nulls(type_name, dtype, cls, nulls):
    matrix = np.random.default_rng(7).standard_normal((5, 12)).astype(np.float32)
    with connect() as conn:
        adapt(conn)
        [stored] = conn.execute(
            f"select %b::{type_name}[]", [VectorArray(matrix, nulls, type_name)]
        ).fetchone()
    assert len(stored) == 5 + nulls
    assert stored[5:] == [None] * nulls
    for row, value in zip(matrix, stored[:5], strict=False):
        assert isinstance(value, cls)
        assert np.array_equal(value.to_numpy(), row.astype(dtype))


def test_array_of_only_nulls():
    with connect() as conn:
        adapt(conn)
        nothing = VectorArray(np.empty((0, 0), np.float32), 3, "halfvec")
        [stored] = conn.execute("select %b::halfvec[]", [nothing]).fetchone()
    assert stored == [None, None, None]
