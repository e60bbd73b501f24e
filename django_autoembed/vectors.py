"""Binary vector parameters for the write path (psycopg + pgvector)."""

from __future__ import annotations

import struct
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from pgvector.django import HalfVectorField
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo

if TYPE_CHECKING:
    from .declarations import EmbeddingConfig

_adapted: weakref.WeakSet[Any] = weakref.WeakSet()
# Big-endian element values, as halfvec_recv and vector_recv read them.
_VALUE_TYPES: dict[str, np.dtype[Any]] = {"halfvec": np.dtype(">f2"), "vector": np.dtype(">f4")}


def vector_type(config: EmbeddingConfig) -> str:
    """'halfvec' or 'vector': the SQL type of the config's column."""
    column = (config.shadow_of or config).column  # a model change's shadow: as the live one
    field = config.vector_model._meta.get_field(column)
    return "halfvec" if isinstance(field, HalfVectorField) else "vector"


def precision(type_name: str) -> np.dtype[Any]:
    """The float type a 'halfvec' or 'vector' column stores, in native byte order."""
    return _VALUE_TYPES[type_name].newbyteorder("=")


class VectorArray:
    """Rows of a matrix (and trailing NULLs), sent as one binary ``halfvec[]`` or ``vector[]``.

    pgvector's own dumper builds an object per row and psycopg dumps the array
    element by element; here numpy lays out the whole array in one pass.
    """

    def __init__(self, matrix: np.ndarray, nulls: int, type_name: str) -> None:
        self.matrix = matrix
        self.nulls = nulls
        self.type_name = type_name

    def to_binary(self, element_oid: int) -> bytes:
        rows, dims = self.matrix.shape if self.matrix.size else (len(self.matrix), 0)
        values = _VALUE_TYPES[self.type_name]
        # array_recv: ndim, has-nulls flag, element type, then (length, lower bound) per dimension.
        header = struct.pack(">iiiii", 1, 1 if self.nulls else 0, element_oid, rows + self.nulls, 1)
        # each element: its byte length, then the vector's own binary form (dims, unused, values).
        layout = np.dtype(
            [("size", ">i4"), ("dims", ">u2"), ("unused", ">u2"), ("values", values, (dims,))]
        )
        body = np.empty(rows, dtype=layout)
        body["size"] = 4 + dims * values.itemsize
        body["dims"] = dims
        body["unused"] = 0
        body["values"] = self.matrix
        return header + body.tobytes() + b"\xff\xff\xff\xff" * self.nulls


def adapt(raw_connection: Any) -> None:
    """Register pgvector's binary dumpers and the VectorArray dumper on this connection, once."""
    if raw_connection in _adapted:
        return
    from pgvector.psycopg import register_vector

    register_vector(raw_connection)
    oids: dict[str, int] = {}  # element types, which array_recv checks against the cast
    for name in _VALUE_TYPES:
        info = raw_connection.adapters.types.get(name) or TypeInfo.fetch(raw_connection, name)
        if info is not None:
            oids[name] = info.oid

    class VectorArrayDumper(Dumper):
        format = Format.BINARY
        oid = 0  # the query casts the parameter; the element type travels in the payload

        def dump(self, obj: VectorArray) -> bytes:
            return obj.to_binary(oids[obj.type_name])

    raw_connection.adapters.register_dumper(VectorArray, VectorArrayDumper)
    _adapted.add(raw_connection)
