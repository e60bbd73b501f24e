"""Old home of the declarations (``EmbeddingConfig``, the registry): import from
``django_autoembed`` (or ``django_autoembed.declarations``) instead."""

from .declarations import EmbeddingConfig, Registry, registry, short_name

__all__ = ["EmbeddingConfig", "Registry", "registry", "short_name"]
