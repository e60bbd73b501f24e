"""Binary vector parameters for the write path (psycopg + pgvector)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from pgvector.django import HalfVectorField

if TYPE_CHECKING:
    from .config import EmbeddingConfig

_adapted: weakref.WeakSet[Any] = weakref.WeakSet()


def vector_type(config: EmbeddingConfig) -> str:
    """'halfvec' or 'vector': the SQL type of the config's column."""
    field = config.model_class._meta.get_field(config.column)
    return "halfvec" if isinstance(field, HalfVectorField) else "vector"


def adapt(raw_connection: Any) -> None:
    """Register pgvector's binary dumpers on this psycopg connection, once."""
    if raw_connection in _adapted:
        return
    from pgvector.psycopg import register_vector

    register_vector(raw_connection)
    _adapted.add(raw_connection)
