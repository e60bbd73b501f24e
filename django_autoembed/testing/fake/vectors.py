"""The fake's vectors: deterministic unit vectors derived from each text (same text, same
vector)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

_POOL_SIZE = 1024
_pools: dict[int, np.ndarray] = {}


def _pool(dimensions: int) -> np.ndarray:
    if dimensions not in _pools:
        _pools[dimensions] = (
            np.random.default_rng(dimensions)
            .standard_normal((_POOL_SIZE, dimensions))
            .astype(np.float32)
        )
    return _pools[dimensions]


def fake_vectors(texts: list[str], dimensions: int) -> np.ndarray:
    """The unit vectors the fake server returns for ``texts``, one row each.

    Each text picks three rows of a fixed random pool by its hash (a billion
    combinations), so vectors are deterministic, distinct and cheap to make.
    """
    if not texts:
        return np.empty((0, dimensions), dtype=np.float32)
    digests = (
        np.frombuffer(
            b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=6).digest() for t in texts),
            dtype="<u2",
        ).reshape(len(texts), 3)
        % _POOL_SIZE
    )
    pool = _pool(dimensions)
    v = pool[digests[:, 0]] + 0.7 * pool[digests[:, 1]] + 0.49 * pool[digests[:, 2]]
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


# ``related_vectors``: character trigrams hashed into this many buckets, each bucket a row of
# the pool, plus this much of the text's own ``fake_vectors`` direction.
_TRIGRAM_BUCKETS = 256
_OWN = 0.45


def related_vectors(texts: list[str], dimensions: int) -> np.ndarray:
    """Unit vectors in which texts that share wording lie near each other, as real embeddings do.

    A text's lowercased UTF-8 trigrams are counted into buckets; the square roots of the
    counts, less their mean, weigh the pool's rows; a share of the text's ``fake_vectors``
    direction is added so that every text keeps a vector of its own. Same text, same vector.
    On the long-document bench's prose this puts consecutive 512-token chunks of a document
    at a cosine of ~0.56 and chunks of unrelated documents at ~0.37; all-MiniLM-L6-v2 gives
    0.54 and 0.33 on the same chunks. (``fake_vectors`` gives ~0.00 for both: as far apart
    as vectors can be, the hardest case for an approximate search; pgvector's HNSW index at
    its defaults finds 0.82 of the true ten nearest among 52,000 of them, 0.98 of these.)
    """
    if not texts:
        return np.empty((0, dimensions), dtype=np.float32)
    raw = [t.lower().encode("utf-8") for t in texts]
    lengths = np.fromiter((len(b) for b in raw), dtype=np.int64, count=len(raw))
    data = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.uint32)
    owner = np.repeat(np.arange(len(texts)), lengths)
    if len(data) >= 3:
        hashed = ((data[:-2] * 961 + data[1:-1] * 31 + data[2:]) * np.uint32(2654435761)) >> 16
        inside = owner[:-2] == owner[2:]  # trigrams that do not straddle two texts
        cells = owner[:-2][inside] * _TRIGRAM_BUCKETS + hashed[inside] % _TRIGRAM_BUCKETS
        counts = np.bincount(cells, minlength=len(texts) * _TRIGRAM_BUCKETS)
    else:
        counts = np.zeros(len(texts) * _TRIGRAM_BUCKETS, dtype=np.int64)
    weights = np.sqrt(counts.reshape(len(texts), _TRIGRAM_BUCKETS).astype(np.float32))
    weights -= weights.mean(axis=1, keepdims=True)
    shared = weights @ _pool(dimensions)[:_TRIGRAM_BUCKETS]
    norms = np.linalg.norm(shared, axis=1, keepdims=True)
    shared = np.divide(shared, norms, out=np.zeros_like(shared), where=norms > 0)
    v = shared + _OWN * fake_vectors(texts, dimensions)
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


# What the server's ``vectors`` setting names.
VECTORS: dict[str, Callable[[list[str], int], np.ndarray]] = {
    "distinct": fake_vectors,
    "related": related_vectors,
}


def fake_vector(text: str, dimensions: int, model: str | None = None) -> np.ndarray:
    """The unit vector the fake server returns for ``text`` (``model``: the one asked, when
    the server gives each model its own vectors, ``model_vectors``)."""
    vector: np.ndarray = fake_vectors(of_model([text], model), dimensions)[0]
    return vector


def of_model(texts: list[str], model: str | None) -> list[str]:
    """What a text's vector is made from: the text, or the model and the text when each
    model has vectors of its own (as two real models have)."""
    return texts if model is None else [f"{model}\x00{t}" for t in texts]
