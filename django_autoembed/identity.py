"""What made a config's vectors: provider, model and dimensions, recorded with the first ones.

Vectors of two models live in two spaces: a query embedded by the new model and
compared with rows embedded by the old one ranks rows at random, with no error.
So the identity that made a config's stored vectors is kept in
``EmbeddingIdentity``, recorded in the transaction that writes its first
vectors, and a declaration that names another model, provider or dimensions is
refused loudly while the old vectors are stored:

- the worker and the endpoint pause the config (its jobs wait, unspent; the
  other configs go on; ``autoembed_status`` shows why). They check before they
  embed (``verify``, nothing paid for), and again under a lock on the identity
  in the transaction that writes (``guard_write``): a process that checked just
  before another one re-embedded the config writes nothing of the old model;
- ``semantic_search`` and ``hybrid_search`` raise ``ModelChanged``;
- ``manage.py check --database default`` reports ``autoembed.E111``.

The message says what to do: restore the declaration, move to the new model with
no downtime by a migration (``changes``: the new vectors fill beside the old ones),
or ``autoembed_reembed`` to re-embed in place. ``autoembed_reembed`` records the new
identity *pinned*: a process still declaring the old one is refused even once no
vector is stored. An
identity that is not pinned, of a config whose vectors are all gone, is taken
over by the first write of another (there is nothing to compare with).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import DatabaseError, OperationalError, connections, models, transaction
from psycopg import sql

from . import settings
from . import sql as sqlfiles
from .declarations import EmbeddingConfig
from .exceptions import ModelChanged
from .providers.local import DEFAULT_LOCAL_MODEL

logger = logging.getLogger(__name__)

# Seconds a process trusts a verified identity before reading it again (a search costs
# one primary-key read that often). The writes are guarded in any case (guard_write).
VERIFY_EVERY = 30.0
# Rows (or chunks) forgotten per transaction by autoembed_reembed.
CLEAR_PAGE = 5000
# Tries of a page that meets the application's writes in a deadlock.
CLEAR_TRIES = 5
_verified: dict[tuple[str, str], tuple[Identity, float]] = {}
_warned: set[str] = set()
_lock = threading.Lock()
# Providers named by the path of a built-in class are that built-in.
_BUILTIN_PATHS = {
    "django_autoembed.providers.openai.OpenAIProvider": "openai",
    "django_autoembed.providers.local.LocalProvider": "local",
}


class EmbeddingIdentity(models.Model):
    """The provider, model and dimensions that made the vectors a config stores."""

    config = models.CharField(max_length=255, primary_key=True, help_text="the config's label")
    provider = models.CharField(max_length=255)
    model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    pinned = models.BooleanField(
        default=False,
        help_text="set by autoembed_reembed: another declaration is refused even while no "
        "vector is stored",
    )
    clearing = models.BooleanField(
        default=False,
        help_text="autoembed_reembed is forgetting the old vectors (or was stopped before it "
        "had: run it again)",
    )
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
    """The identity the declaration (and the settings) embed ``config`` with now, in one
    spelling: a built-in provider by its name, the local model without its hub prefix."""
    provider = config.provider or settings.current().provider
    provider = _BUILTIN_PATHS.get(provider, provider)
    model = config.get_model()
    if provider == "local":  # as LocalProvider reads the name
        model = model.removeprefix("sentence-transformers/")
        if model.startswith("text-embedding-"):
            model = DEFAULT_LOCAL_MODEL
    return Identity(provider, model, config.get_dimensions())


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
    beside = "a chunk table" if config.chunked else "a column"
    no_downtime = (
        "name the new model in the config's declaration (not only in the AUTOEMBED "
        "settings), then run `python manage.py makemigrations` and `migrate`: the new vectors "
        f"fill {beside} beside the live ones and searches switch once it is complete"
    )
    return (
        "Nothing is embedded or searched for this config until one of these is done: (1) "
        "restore the declaration's model, provider and dimensions (or the AUTOEMBED settings "
        f"it inherits); (2) move with no downtime: {no_downtime} (docs: how-to 'Change the "
        "embedding model'); (3) re-embed in place, searches returning fewer rows until it is "
        f"done: `python manage.py autoembed_reembed {config.label}`."
    )


def column_problem(config: EmbeddingConfig, column: int, wanted: Identity) -> str:
    return (
        f"{config.label}: its column holds vectors of {column} dimensions, but the declaration "
        f"embeds {wanted.dimensions}: no vector could be written. Write the migration "
        "(`python manage.py makemigrations`) and apply it (`migrate`); if the column still "
        f"holds vectors, run `python manage.py autoembed_reembed {config.label}` first (see the "
        "how-to 'Change the embedding model' in the docs)."
    )


# -- reading and recording ---------------------------------------------------------------


def _row(using: str, config: EmbeddingConfig) -> EmbeddingIdentity | None:
    return EmbeddingIdentity.objects.using(using).filter(config=config.label).first()


def stored(using: str, config: EmbeddingConfig) -> Identity | None:
    """The identity recorded for ``config`` (None: none yet)."""
    row = _row(using, config)
    return row.identity if row else None


def clearing(using: str, config: EmbeddingConfig) -> bool:
    """Whether ``autoembed_reembed`` of ``config`` began and has not finished forgetting."""
    row = _row(using, config)
    return bool(row and row.clearing)


def _names(config: EmbeddingConfig, using: str) -> dict[str, sql.Composable]:
    model = config.vector_model
    return {
        "identity": sql.Identifier(EmbeddingIdentity._meta.db_table),
        "table": sql.Identifier(model._meta.db_table),
        "col": sql.Identifier(config.column),
        "pk": sql.Identifier(model._meta.pk.column),
        "pktype": sql.SQL(model._meta.pk.rel_db_type(connections[using])),
    }


def has_vectors(using: str, config: EmbeddingConfig) -> bool:
    """Whether ``config`` stores any vector (in its column, or its chunk table)."""
    query = sqlfiles.statement("identity.sql", "has_vectors", **_names(config, using))
    with connections[using].cursor() as cursor:
        cursor.execute(query)
        return bool(cursor.fetchone()[0])


def column_dimensions(using: str, config: EmbeddingConfig) -> int | None:
    """The dimensions of ``config``'s vector column as the catalog has them (None: unknown)."""
    table = sql.Identifier(config.vector_model._meta.db_table).as_string(None)
    with connections[using].cursor() as cursor:
        cursor.execute(sqlfiles.statement("checks.sql", "column_type"), [table, config.column])
        row = cursor.fetchone()
    return int(row[1]) if row and row[0] in ("vector", "halfvec") and row[1] > 0 else None


def record(
    using: str,
    config: EmbeddingConfig,
    identity: Identity | None = None,
    *,
    pinned: bool = False,
    clearing: bool = False,
) -> None:
    """Say that ``config``'s vectors are (from now on) made by ``identity`` (the declared)."""
    identity = identity or declared(config)
    EmbeddingIdentity.objects.using(using).update_or_create(
        config=config.label,
        defaults={
            "provider": identity.provider,
            "model": identity.model,
            "dimensions": identity.dimensions,
            "pinned": pinned,
            "clearing": clearing,
        },
    )
    forget(using, config)


def cleared(using: str, config: EmbeddingConfig) -> None:
    """``autoembed_reembed`` has forgotten every old vector: the config may be used again."""
    EmbeddingIdentity.objects.using(using).filter(config=config.label).update(clearing=False)
    forget(using, config)


def clear(using: str, config: EmbeddingConfig) -> int:
    """Forget every vector ``config`` stores (its chunks, for chunks), a page of rows per
    transaction, locked in key order (the application's writes wait for a page at most; a
    page that meets one in a deadlock is tried again); returns how many."""
    key = "clear_chunks" if config.chunked else "clear_column"
    names = _names(config, using)
    query = sqlfiles.statement("identity.sql", key, **names)
    page_end = sqlfiles.statement("identity.sql", "page_end", **names)
    total, last = 0, None
    with connections[using].cursor() as cursor:
        while True:
            cursor.execute(page_end, [last, last, CLEAR_PAGE])
            row = cursor.fetchone()
            if row is None:  # past the last row
                return total
            end = row[0]
            total += _clear_page(using, cursor, query, [last, last, end])
            last = end


def _clear_page(using: str, cursor: Any, query: str, params: list[Any]) -> int:
    for attempt in range(CLEAR_TRIES):
        try:
            with transaction.atomic(using=using):
                cursor.execute(query, params)
                return int(cursor.rowcount or 0)
        except OperationalError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                raise
            if attempt == CLEAR_TRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    return 0


def forget(using: str, config: EmbeddingConfig) -> None:
    with _lock:
        _verified.pop((using, config.label), None)


def forget_all() -> None:
    """Read every identity again (tests: the tables were emptied under this process)."""
    with _lock:
        _verified.clear()


# -- the checks --------------------------------------------------------------------------


class _Takeover:
    """No vector is stored of the identity recorded (not pinned): a write may take it over."""


TAKEOVER = _Takeover()


def _refusal(
    using: str, config: EmbeddingConfig, wanted: Identity, row: tuple[Any, ...] | None
) -> str | _Takeover | None:
    """Why ``config`` may not be embedded (or searched) as declared now, given the recorded
    ``row`` (provider, model, dimensions, pinned, clearing); None when it may."""
    column = column_dimensions(using, config)
    if column is not None and column != wanted.dimensions:
        return column_problem(config, column, wanted)
    if row is None:
        return None
    recorded = Identity(*row[:3])
    if row[4]:
        return reembedding(config, recorded)
    if recorded == wanted:
        return None
    if row[3] or has_vectors(using, config):
        return explain(config, recorded, wanted)
    return TAKEOVER


def reembedding(config: EmbeddingConfig, recorded: Identity) -> str:
    return (
        f"{config.label}: `autoembed_reembed` is forgetting its vectors before they are made "
        f"again by {recorded}, or was stopped before it had: run `python manage.py "
        f"autoembed_reembed {config.label}` again to finish. Until then nothing is embedded or "
        "searched for this config (old and new vectors would mix)."
    )


def _read(using: str, config: EmbeddingConfig, lock: str) -> tuple[Any, ...] | None:
    """The recorded identity's row: ``read`` (no lock), ``hold`` (FOR SHARE) or ``take``
    (FOR UPDATE), the last two until the transaction ends."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            sqlfiles.statement("identity.sql", lock, **_names(config, using)), [config.label]
        )
        row = cursor.fetchone()
    return tuple(row) if row else None


def refusal(using: str, config: EmbeddingConfig) -> str | None:
    """Why ``verify`` would refuse ``config`` now (None: it would not); reads only."""
    with transaction.atomic(using=using):
        why = _refusal(using, config, declared(config), _read(using, config, "read"))
    return why if isinstance(why, str) else None


def verify(using: str, config: EmbeddingConfig) -> bool:
    """Raise ``ModelChanged`` if ``config`` may not be embedded or searched as declared:
    its stored vectors were made by another identity (or ``autoembed_reembed`` pinned
    another, or is forgetting them), or its column holds another number of dimensions.

    Reads only. A database that lacks the table (not migrated) or a role that may not
    read it cannot tell: nothing is refused then (said once, as a warning). Returns
    whether the database was read (False: this process verified it lately).
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
            why = _refusal(using, config, wanted, _read(using, config, "read"))
    except DatabaseError as exc:
        if not _cannot_tell(using, exc):
            raise
        why = None
    if isinstance(why, str):
        forget(using, config)  # read again next time: the way out may be taken
        raise ModelChanged(why, config.label)
    with _lock:
        _verified[key] = (wanted, now)
    return True


def guard_write(using: str, config: EmbeddingConfig) -> None:
    """In the transaction that writes ``config``'s vectors, before any row is locked: record
    the declared identity if none is, and hold it until the commit (FOR SHARE), or raise
    ``ModelChanged`` if another is recorded (``autoembed_reembed`` in another process).
    Taking over an identity of which no vector is left locks it FOR UPDATE first: two
    writers never both hold it shared and then wait on each other to update it."""
    wanted = declared(config)
    try:
        with transaction.atomic(using=using):
            with connections[using].cursor() as cursor:
                cursor.execute(
                    sqlfiles.statement("identity.sql", "claim", **_names(config, using)),
                    [config.label, wanted.provider, wanted.model, wanted.dimensions],
                )
            if _ours(_read(using, config, "read"), wanted) and _ours(
                _read(using, config, "hold"), wanted
            ):
                return
            why = _refusal(using, config, wanted, _read(using, config, "take"))
            if why is TAKEOVER:
                logger.info(
                    "%s: no vector stored; its vectors are %s from now on.", config.label, wanted
                )
                record(using, config, wanted)
            elif isinstance(why, str):
                forget(using, config)
                raise ModelChanged(why, config.label)
    except DatabaseError as exc:
        if not _cannot_tell(using, exc):
            raise


def _ours(row: tuple[Any, ...] | None, wanted: Identity) -> bool:
    return row is not None and Identity(*row[:3]) == wanted and not row[4]


def _cannot_tell(using: str, exc: DatabaseError) -> bool:
    """Whether ``exc`` means the identity table is missing or not granted (warned once)."""
    cause: Any = exc.__cause__
    if not isinstance(cause, (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege)):
        return False
    with _lock:
        first = using not in _warned
        _warned.add(using)
    if first:
        logger.warning(
            "The embedding identities cannot be read on database %r (%s): a changed model "
            "is not refused there. Run `python manage.py migrate`, and for a role of its own "
            "`python manage.py autoembed_grants ROLE --apply`.",
            using,
            str(cause).strip().splitlines()[0],
        )
    return True


def configs_refused(using: str, configs: list[EmbeddingConfig]) -> Iterator[EmbeddingConfig]:
    """The configs ``verify`` refuses (for the index deferral: no backlog of theirs drains)."""
    for config in configs:
        try:
            verify(using, config)
        except ModelChanged:
            yield config
