"""What made a config's vectors: provider, model and dimensions, recorded with the first ones.

Vectors of two models live in two spaces: a query embedded by the new model and
compared with rows embedded by the old one ranks rows at random, with no error.
So the identity that made a config's stored vectors is kept in
``EmbeddingIdentity`` (recorded by the first worker or endpoint that embeds the
config), and a declaration that names another model, provider or dimensions
while the old vectors are stored is refused loudly:

- the worker and the endpoint pause the config (its jobs wait, unspent; the
  other configs go on; ``autoembed_status`` shows why);
- ``semantic_search`` and ``hybrid_search`` raise ``ModelChanged``;
- ``manage.py check --database default`` reports ``autoembed.E111``.

The message says what to do: restore the declaration, move to the new model in a
second config beside the old one (no downtime), or ``autoembed_reembed`` to
re-embed in place. A config with no vector stored yet takes the declared identity
silently: there is nothing to compare with.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.db import DatabaseError, connections, models, transaction
from psycopg import sql

from . import settings
from . import sql as sqlfiles
from .declarations import EmbeddingConfig
from .exceptions import ModelChanged

logger = logging.getLogger(__name__)

# Seconds a process trusts a verified identity before reading it again (a search costs
# one primary-key read that often; another process's autoembed_reembed is seen as soon).
VERIFY_EVERY = 30.0
_verified: dict[tuple[str, str], tuple[Identity, float]] = {}
_lock = threading.Lock()


class EmbeddingIdentity(models.Model):
    """The provider, model and dimensions that made the vectors a config stores."""

    config = models.CharField(max_length=255, primary_key=True, help_text="the config's label")
    provider = models.CharField(max_length=255)
    model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    recorded = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "django_autoembed"
        verbose_name_plural = "embedding identities"

    def __str__(self) -> str:
        return f"{self.config}: {self.identity}"

    @property
    def identity(self) -> Identity:
        return Identity(self.provider, self.model, self.dimensions)


@dataclass(frozen=True)
class Identity:
    provider: str
    model: str
    dimensions: int

    def __str__(self) -> str:
        return f"{self.provider} {self.model} ({self.dimensions} dimensions)"


def declared(config: EmbeddingConfig) -> Identity:
    """The identity the declaration (and the settings) embed ``config`` with now."""
    provider = config.provider or settings.current().provider
    return Identity(provider, config.get_model(), config.get_dimensions())


def pause_key(config: EmbeddingConfig) -> str:
    """What a refused model change pauses: this config only."""
    return f"{config.label} (model changed)"


def explain(config: EmbeddingConfig, stored: Identity, wanted: Identity) -> str:
    """Why ``config`` is refused, and the ways out."""
    return f"{problem(config, stored, wanted)} {ways_out(config)}"


def problem(config: EmbeddingConfig, stored: Identity, wanted: Identity) -> str:
    return (
        f"{config.label}: its stored vectors were made by {stored}, but the declaration now "
        f"embeds with {wanted}. Vectors of two models cannot be compared: searches would rank "
        "rows at random, and rows embedded from now on would mix both."
    )


def ways_out(config: EmbeddingConfig) -> str:
    return (
        "Nothing is embedded or searched for this config until one of these is done: (1) "
        "restore the declaration's model, provider and dimensions (or the AUTOEMBED settings "
        "it inherits); (2) move with no downtime: keep this config as it was and add a "
        "second config with the new model beside it, backfill it, then switch searches "
        "(README, 'Changing the embedding model'); (3) re-embed in place, searches returning "
        "fewer rows until it is done: `python manage.py autoembed_reembed "
        f"{config.label}`."
    )


def stored(using: str, config: EmbeddingConfig) -> Identity | None:
    """The identity recorded for ``config`` (None: none yet)."""
    row = EmbeddingIdentity.objects.using(using).filter(config=config.label).first()
    return row.identity if row else None


def has_vectors(using: str, config: EmbeddingConfig) -> bool:
    """Whether ``config`` stores any vector (in its column, or its chunk table)."""
    table = sql.Identifier(config.vector_model._meta.db_table)
    query = sqlfiles.statement(
        "identity.sql", "has_vectors", table=table, col=sql.Identifier(config.column)
    )
    with connections[using].cursor() as cursor:
        cursor.execute(query)
        return bool(cursor.fetchone()[0])


def clear(using: str, config: EmbeddingConfig) -> int:
    """Forget every vector ``config`` stores (its chunks, for chunks); returns how many."""
    key = "clear_chunks" if config.chunked else "clear_column"
    table = sql.Identifier(config.vector_model._meta.db_table)
    query = sqlfiles.statement("identity.sql", key, table=table, col=sql.Identifier(config.column))
    with connections[using].cursor() as cursor:
        cursor.execute(query)
        return int(cursor.rowcount or 0)


def column_dimensions(using: str, config: EmbeddingConfig) -> int | None:
    """The dimensions of ``config``'s vector column as the catalog has them (None: unknown)."""
    table = sql.Identifier(config.vector_model._meta.db_table).as_string(None)
    with connections[using].cursor() as cursor:
        cursor.execute(sqlfiles.statement("checks.sql", "column_type"), [table, config.column])
        row = cursor.fetchone()
    return int(row[1]) if row and row[1] > 0 else None


def record(using: str, config: EmbeddingConfig, identity: Identity | None = None) -> None:
    """Say that ``config``'s vectors are (from now on) made by ``identity`` (the declared)."""
    identity = identity or declared(config)
    EmbeddingIdentity.objects.using(using).update_or_create(
        config=config.label,
        defaults={
            "provider": identity.provider,
            "model": identity.model,
            "dimensions": identity.dimensions,
        },
    )
    forget(using, config)


def forget(using: str, config: EmbeddingConfig) -> None:
    with _lock:
        _verified.pop((using, config.label), None)


def forget_all() -> None:
    """Read every identity again (tests: the tables were emptied under this process)."""
    with _lock:
        _verified.clear()


def verify(using: str, config: EmbeddingConfig, *, claim: bool) -> bool:
    """Raise ``ModelChanged`` if ``config`` stores vectors another identity made.

    ``claim``: record the declared identity when there is none yet, or when no vector is
    stored (the worker and the endpoint, before they embed); a search only reads. A
    database that lacks the table (not migrated) or a role that may not read it cannot
    tell: nothing is refused then. Returns whether the database was read (False: this
    process verified it lately).
    """
    wanted = declared(config)
    key = (using, config.label)
    now = time.monotonic()
    with _lock:
        seen = _verified.get(key)
    if seen is not None and seen[0] == wanted and now - seen[1] < VERIFY_EVERY:
        return False
    try:
        with transaction.atomic(using=using):
            current = stored(using, config)
            if current != wanted:
                if current is not None and has_vectors(using, config):
                    forget(using, config)  # read again next time: the way out may be taken
                    raise ModelChanged(explain(config, current, wanted), config.label)
                if claim:
                    if current is not None:
                        logger.info(
                            "%s: no vector stored yet; its vectors are %s from now on (were %s).",
                            config.label,
                            wanted,
                            current,
                        )
                    record(using, config, wanted)
    except DatabaseError as exc:
        logger.debug("Embedding identity of %s not verified (%s).", config.label, exc)
        return True
    with _lock:
        _verified[key] = (wanted, now)
    return True
