"""Old home of the index classes: migrations written before they moved import them from
here. New code imports ``django_autoembed.hnsw.indexes``."""

from .hnsw.indexes import HnswIndex, TextSearchIndex

__all__ = ["HnswIndex", "TextSearchIndex"]
