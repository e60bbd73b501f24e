"""Vectors by content hash: a text embedded once is not paid for again, in any process.

Every vector a provider returns is kept for ``VECTOR_STORE_DAYS`` under a hash
of the text and of what makes two vectors of it interchangeable (provider,
model, dimensions, server, column type). A row edited back to an earlier text,
a row queued twice and read by two workers, a worker restarted mid-backfill,
identical texts in many rows: each finds its vector here instead of asking the
provider. The Batch API's results arrive here too, and the ordinary processing
of the rows then writes them. The table is UNLOGGED (a cache: a crash empties
it, and nothing else is lost) and pruned by the workers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg
from django.db import ProgrammingError, connections, models, transaction
from psycopg import sql

from . import settings
from . import sql as sqlfiles

logger = logging.getLogger(__name__)

# Seconds between a process's prunes of old entries.
PRUNE_EVERY = 600.0
# With VECTOR_STORE_DAYS = 0 only the Batch API's vectors are stored; they are needed until
# their jobs are processed, a batch's 24-hour window and its collection, then forgotten.
BATCH_ONLY_DAYS = 2.0
_pruned: dict[str, float] = {}


class StoredVector(models.Model):
    """One vector, by the hash of its text and of the provider that made it."""

    key = models.BinaryField(primary_key=True, max_length=16)
    vector = models.BinaryField(help_text="float16 or float32, little-endian")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "django_autoembed"

    def __str__(self) -> str:
        return bytes(self.key).hex()


def key(scope: tuple[Any, ...], text: str) -> bytes:
    """The store's key of ``text`` embedded by ``scope`` (provider key and column type)."""
    digest = hashlib.blake2b(repr(scope).encode(), digest_size=16)
    digest.update(b"\0")
    digest.update(text.encode("utf-8"))
    return digest.digest()


def enabled() -> bool:
    return bool(settings.current().vector_store_days)


def _query(key_: str) -> str:
    return sqlfiles.statement("store.sql", key_, store=sql.Identifier(StoredVector._meta.db_table))


def get_many(using: str, keys: Iterable[bytes], dtype: Any) -> dict[bytes, np.ndarray]:
    """The stored vectors of these keys (missing ones are absent)."""
    wanted = list(keys)
    if not wanted:
        return {}
    try:
        with transaction.atomic(using=using):
            connection = connections[using]
            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as cursor:  # binary both ways
                cursor.execute(_query("get"), [wanted], binary=True)
                rows = cursor.fetchall()
        return {bytes(k): np.frombuffer(bytes(v), dtype=dtype) for k, v in rows}
    except (ProgrammingError, psycopg.ProgrammingError) as exc:  # not migrated, not granted
        logger.debug("Vector store unavailable (%s).", exc)
        return {}


def put_many(using: str, items: Iterable[tuple[bytes, np.ndarray]], dtype: Any) -> None:
    """Keep vectors (an entry already there stays as it is)."""
    pairs = [(k, np.ascontiguousarray(v, dtype=dtype).tobytes()) for k, v in items]
    if not pairs:
        return
    try:
        with transaction.atomic(using=using):
            connection = connections[using]
            connection.ensure_connection()
            # Binary parameters: as text, every byte of a vector would be escaped.
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(_query("put"), [[k for k, _ in pairs], [v for _, v in pairs]])
    except (ProgrammingError, psycopg.ProgrammingError) as exc:
        logger.debug("Vector store unavailable (%s).", exc)


def prune(using: str, *, force: bool = False) -> int:
    """Forget entries older than VECTOR_STORE_DAYS, or BATCH_ONLY_DAYS when it is 0 (at most
    every PRUNE_EVERY seconds)."""
    days = settings.current().vector_store_days or BATCH_ONLY_DAYS
    now = time.monotonic()
    if not force and now - _pruned.get(using, -PRUNE_EVERY) < PRUNE_EVERY:
        return 0
    _pruned[using] = now
    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(_query("prune"), [float(days)])
            return int(cursor.rowcount or 0)
    except ProgrammingError as exc:
        logger.debug("Vector store not pruned (%s).", exc)
        return 0
