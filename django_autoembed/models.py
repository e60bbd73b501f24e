"""The app's models, defined beside the code that uses them."""

from .failures import EmbeddingFailure
from .indexing import IndexState
from .pauses import ProviderPause

__all__ = ["EmbeddingFailure", "IndexState", "ProviderPause"]
