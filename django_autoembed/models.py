"""The app's models, defined beside the code that uses them."""

from .batchapi import ProviderBatch
from .budget import RateBudget
from .failures import EmbeddingFailure
from .incidents import Incident
from .indexing import IndexState
from .pauses import ProviderPause
from .store import StoredVector
from .usage import EmbeddingUsage

__all__ = [
    "EmbeddingFailure",
    "EmbeddingUsage",
    "Incident",
    "IndexState",
    "ProviderBatch",
    "ProviderPause",
    "RateBudget",
    "StoredVector",
]
