"""django-autoembed: pgvector embeddings kept in sync by the database itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EmbeddingConfig", "EmbeddingMixin", "EmbeddingQuerySet", "EmbeddingManager"]

if TYPE_CHECKING:
    from .config import EmbeddingConfig, EmbeddingMixin
    from .search import EmbeddingManager, EmbeddingQuerySet


def __getattr__(name: str) -> Any:
    # Lazy: importing models at package import time would break app loading.
    if name in ("EmbeddingConfig", "EmbeddingMixin"):
        from . import config

        return getattr(config, name)
    if name in ("EmbeddingQuerySet", "EmbeddingManager"):
        from . import search

        return getattr(search, name)
    raise AttributeError(name)
