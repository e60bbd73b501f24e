"""Old home of EmbeddingTrigger; migrations written before the move import it from here."""

from .triggers import EmbeddingTrigger

__all__ = ["EmbeddingTrigger"]
