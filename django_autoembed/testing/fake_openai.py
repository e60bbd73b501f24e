"""A loopback server speaking the OpenAI embeddings protocol, for tests and benchmarks.

Vectors are deterministic unit vectors derived from the text (same text, same
vector): by default all but orthogonal to each other; with ``vectors="related"``, near
each other for texts that share wording, as real embeddings are. Latency and failures are
set on the running server::

    with FakeEmbeddingsServer() as api:
        AUTOEMBED = {"BASE_URL": api.base_url, "API_KEY": "test", ...}
        api.latency = 0.2
        api.fail_next(3, status=429, retry_after=1)

The code lives in the ``fake`` package; this module keeps the names tests and benches import.
"""

from __future__ import annotations

from .fake.limits import MAX_INPUT_TOKENS, MAX_INPUTS, MAX_REQUEST_TOKENS, MODELS
from .fake.protocol import api_error
from .fake.server import FakeEmbeddingsServer
from .fake.vectors import VECTORS, fake_vector, fake_vectors, related_vectors

__all__ = [
    "MAX_INPUTS",
    "MAX_INPUT_TOKENS",
    "MAX_REQUEST_TOKENS",
    "MODELS",
    "VECTORS",
    "FakeEmbeddingsServer",
    "api_error",
    "fake_vector",
    "fake_vectors",
    "related_vectors",
]
