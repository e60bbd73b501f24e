"""The app's models, defined beside the code that uses them."""

from .failures import EmbeddingFailure
from .pauses import ProviderPause

__all__ = ["EmbeddingFailure", "ProviderPause"]
