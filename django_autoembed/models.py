"""The app's models, defined beside the code that uses them."""

from .batches.records import ProviderBatch
from .budget import RateBudget
from .changes import EmbeddingChange
from .failures import EmbeddingFailure
from .hnsw.deferral import IndexState
from .identity import EmbeddingIdentity
from .incidents import Incident
from .pauses import ProviderPause
from .store import StoredVector
from .usage import EmbeddingUsage

__all__ = [
    "EmbeddingChange",
    "EmbeddingFailure",
    "EmbeddingIdentity",
    "EmbeddingUsage",
    "Incident",
    "IndexState",
    "ProviderBatch",
    "ProviderPause",
    "RateBudget",
    "StoredVector",
]
