"""django-autoembed: pgvector embeddings kept in sync by the database itself."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EmbeddingConfig", "EmbeddingManager", "EmbeddingMixin", "EmbeddingQuerySet"]

if TYPE_CHECKING:
    from .declarations import EmbeddingConfig
    from .mixin import EmbeddingMixin
    from .search import EmbeddingManager, EmbeddingQuerySet

_HOMES = {
    "EmbeddingConfig": "declarations",
    "EmbeddingMixin": "mixin",
    "EmbeddingQuerySet": "search",
    "EmbeddingManager": "search",
}


def __getattr__(name: str) -> Any:
    # Lazy: importing models at package import time would break app loading.
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(name)
