"""A config moving to another model, provider, dimensions or text beside its live vectors.

``makemigrations`` writes a ``ChangeEmbedding`` operation when a config's declaration
changes what its vectors are made of (``change_operations``). Applied to a table that
stores vectors, it leaves the live column as it is and adds a *shadow* column
``<column>_next`` with its own index, content function and triggers, and records the
change here (``EmbeddingChange``). From then on:

1. **Filling.** The live column keeps serving every search with the model that made it
   (the recorded one); the shadow is a config of its own (``<label>_next``) with the new
   model, queued for every row as a backfill (``tick``: the first worker to see the change
   queues it) and for every edit by its triggers, live edits first as always.
2. **Switched.** Once the shadow holds a vector for every row with text, no job or batch
   of it is left and its index is ready, searches read the shadow (a process that knows a
   change is under way reads its state before every search).
3. **Cut over.** ``CHANGE_NOTICE`` seconds later (every process has seen the switch), one
   short transaction renames the live column ``<column>_previous`` and the shadow
   ``<column>``, swaps the index names, drops the shadow's triggers, hands its queued jobs
   and failures to the live config and records the new model as the live config's.
4. **Dropped.** The later migration ``makemigrations`` writes (``FinishEmbeddingChange``)
   drops ``<column>_previous`` (at the cutover, if it is applied before).

The states are read from the database, never from the declaration: a process still
running the old code embeds the shadow with the new model too, and a cutover is seen by
every process at once. Until the cutover, reversing the migration abandons the change
with nothing lost. ``autoembed_cutover`` cuts over by hand, and a config declared with
``automatic`` off waits for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

import psycopg
from django.db import (
    DatabaseError,
    OperationalError,
    ProgrammingError,
    connections,
    models,
    transaction,
)
from django.utils import timezone
from psycopg import sql

from . import queue, settings
from . import sql as sqlfiles
from .declarations import EmbeddingConfig, registry, short_name
from .exceptions import ConfigurationError, ModelChanged, NotOwner

logger = logging.getLogger(__name__)

# Seconds between two reads of the changes by a worker (searches: see ``refresh``).
TICK = 1.0
# Seconds between two checks by one process that a shadow is complete.
READY_EVERY = 5.0
# The lock a cutover waits for before it tries again at the next tick.
CUTOVER_LOCK_TIMEOUT = "3s"
# The table's lock a cutover waits for (searches queue behind it meanwhile).
TABLE_LOCK_TIMEOUT = 200  # milliseconds
# Seconds before a cutover that did not get its locks tries again (doubling up to the last).
CUTOVER_BACKOFF = (2.0, 60.0)


class EmbeddingChange(models.Model):
    """A config being moved to another model beside its live vectors (until dropped)."""

    config = models.CharField(max_length=255, primary_key=True, help_text="the live config")
    table = models.CharField(max_length=63)
    # For chunks, ``<chunk table>.<column>`` (as the jobs name them): up to 127 characters.
    column = models.CharField(max_length=255, help_text="the live column")
    shadow = models.CharField(max_length=255, help_text="the column being filled")
    index = models.CharField(
        max_length=63, blank=True, default="", help_text="the live column's index ('' none)"
    )
    index_options = models.JSONField(
        default=dict, blank=True, help_text="the new index's opclass, m and ef_construction"
    )
    old_provider = models.CharField(max_length=255)
    old_model = models.CharField(max_length=255)
    old_dimensions = models.PositiveIntegerField()
    provider = models.CharField(max_length=255)
    model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    automatic = models.BooleanField(
        default=True, help_text="cut over as soon as the shadow is complete"
    )
    began = models.DateTimeField(auto_now_add=True)
    queued = models.DateTimeField(null=True, blank=True, help_text="backfill queued")
    switched = models.DateTimeField(null=True, blank=True, help_text="searches read the shadow")
    cut_over = models.DateTimeField(null=True, blank=True)
    drop = models.BooleanField(
        default=False, help_text="the drop migration ran: drop the old vectors at the cutover"
    )
    failed_tries = models.PositiveIntegerField(
        default=0, help_text="steps of this change that failed (a lock not granted, an error)"
    )
    last_error = models.TextField(blank=True, default="", help_text="why the last one failed")

    class Meta:
        app_label = "django_autoembed"

    def __str__(self) -> str:
        return f"{self.config}: {self.old_model} -> {self.model}"


@dataclass(frozen=True)
class Change:
    """A recorded change, as read by ``refresh``."""

    config: str
    table: str
    column: str
    shadow: str
    index: str
    index_options: dict[str, Any]
    old_provider: str
    old_model: str
    old_dimensions: int
    provider: str
    model: str
    dimensions: int
    automatic: bool
    began: datetime
    queued: datetime | None
    switched: datetime | None
    cut_over: datetime | None
    drop: bool
    failed_tries: int
    last_error: str
    age: float  # seconds since it began
    switched_for: float | None  # seconds since searches moved to the shadow

    @property
    def in_flight(self) -> bool:
        return self.cut_over is None

    @property
    def shadow_label(self) -> str:
        return shadow_label(self.config)

    @property
    def chunked(self) -> bool:
        """Whether the config stores its vectors in chunks: its column is then named
        ``<chunk table>.<column>`` (as its jobs name it) and its shadow is a chunk table."""
        return "." in self.column

    @property
    def vectors(self) -> str:
        """The table that holds the live vectors (the chunk table, for chunks)."""
        return self.column.partition(".")[0] if self.chunked else self.table

    @property
    def shadow_vectors(self) -> str:
        """The table that holds the new vectors (the shadow chunk table, for chunks)."""
        return self.shadow.partition(".")[0] if self.chunked else self.table

    @property
    def vector_column(self) -> str:
        return self.column.rpartition(".")[2]

    @property
    def shadow_index(self) -> str:
        """The name of the new vectors' index until the cutover."""
        shadow = self.vector_column if self.chunked else self.shadow
        return index_name(self.shadow_vectors, shadow)

    @property
    def previous(self) -> str:
        """Where the old vectors are kept after the cutover: a column, or a chunk table."""
        return previous_of(self.column)

    @property
    def phase(self) -> str:
        if self.cut_over is not None:
            return "cut over"
        if self.switched is not None:
            return "switched"
        return "filling" if self.queued is not None else "starting"


# -- names --------------------------------------------------------------------------------


def shadow_column(column: str) -> str:
    return short_name(column, "next")


def shadow_name(config_name: str) -> str:
    return short_name(config_name, "next")


def shadow_label(label: str) -> str:
    """The label of the config that fills a change's new column (``app.Model.name_next``)."""
    model, _, name = label.rpartition(".")
    return f"{model}.{shadow_name(name)}"


def previous_column(column: str) -> str:
    return short_name(column, "previous")


def previous_table(chunk_table: str) -> str:
    return short_name(chunk_table, "previous")


def previous_of(column: str) -> str:
    """Where the old vectors of a change of ``column`` (as a change records it) are kept."""
    chunks, _, _ = column.rpartition(".")
    return previous_table(chunks) if chunks else previous_column(column)


def index_name(table: str, column: str) -> str:
    """The name the mixin gives the HNSW index of ``column`` (``mixin.hnsw_index``)."""
    return short_name(table, column, "hnsw", limit=30)


# -- what each process knows -----------------------------------------------------------


class _Known:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_database: dict[str, dict[str, Change]] = {}  # by alias, then config label
        self.read_at: dict[str, float] = {}  # by database alias
        self.checked: dict[str, float] = {}  # by change: when its shadow was last checked


_known = _Known()


def refresh(using: str, max_age: float | None = None) -> dict[str, Change]:
    """The changes recorded in ``using``, read again if the last read is older than
    ``max_age`` seconds. ``None``: a search's age, 0 while a change is under way (its
    switch and cutover are seen by the next search) and ``CHANGE_NOTICE`` otherwise (a
    change only becomes visible to searches at its switch, ``CHANGE_NOTICE`` after it began).
    """
    now = time.monotonic()
    with _known.lock:
        if max_age is None:
            mine = _known.by_database.get(using, {}).values()
            max_age = 0.0 if any(c.in_flight for c in mine) else notice()
        if now - _known.read_at.get(using, -1e9) < max_age:
            return dict(_known.by_database.get(using, {}))
    changes = _read(using)
    with _known.lock:
        _known.read_at[using] = now
        previous = _known.by_database.get(using, {})
        if changes is not None:
            _known.by_database[using] = changes
        _install()
        known = dict(_known.by_database.get(using, {}))
    gone = any(c.in_flight and label not in known for label, c in previous.items())
    cut = any(
        not c.in_flight and (label not in previous or previous[label].in_flight)
        for label, c in known.items()
    )
    if gone or cut:
        # Cut over (or abandoned) since this process last looked, even if it never saw the
        # change under way: the identity it verified is not the one stored now; verify reads
        # it again, and a process declaring the old model is refused.
        from . import identity

        identity.forget_all()
    return known


def forget_all() -> None:
    """Read the changes again (tests: the tables were emptied under this process)."""
    with _known.lock:
        _known.by_database.clear()
        _known.read_at.clear()
        _known.checked.clear()
        _install()


def notice() -> float:
    return float(settings.current().change_notice)


def _read(using: str) -> dict[str, Change] | None:
    """The recorded changes (None: they cannot be read here, as before the migration)."""
    connection = connections[using]
    # In the caller's transaction, a savepoint: a failed read must not end it.
    guard = transaction.atomic(using=using) if connection.in_atomic_block else nullcontext()
    try:
        with guard, connection.cursor() as cursor:
            cursor.execute(sqlfiles.statement("changes.sql", "all", **_tables()))
            rows = cursor.fetchall()
    except DatabaseError:
        # Not migrated yet, or a role that may not read it: nothing is under way then.
        return None
    # Django's connection leaves jsonb as text (its JSONField decodes it).
    out: dict[str, Change] = {}
    for row in rows:
        values = list(row)
        values[5] = _json(values[5])
        out[row[0]] = Change(*values)
    return out


def _json(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return dict(loaded or {})


def _tables() -> dict[str, sql.Composable]:
    from .batches.records import ProviderBatch
    from .failures import EmbeddingFailure
    from .identity import EmbeddingIdentity
    from .usage import EmbeddingUsage

    return {
        "change": sql.Identifier(EmbeddingChange._meta.db_table),
        "identity": sql.Identifier(EmbeddingIdentity._meta.db_table),
        "failures": sql.Identifier(EmbeddingFailure._meta.db_table),
        "batches": sql.Identifier(ProviderBatch._meta.db_table),
        "usage": sql.Identifier(EmbeddingUsage._meta.db_table),
    }


def _install() -> None:
    """Make the registry serve each config as its change says (caller holds the lock)."""
    under_way = {
        label: c
        for changes in _known.by_database.values()
        for label, c in changes.items()
        if c.in_flight
    }
    registry.overlay = (lambda configs: list(_overlay(configs, under_way))) if under_way else None


def _overlay(
    configs: Iterable[EmbeddingConfig], changes: dict[str, Change]
) -> Iterable[EmbeddingConfig]:
    for config in configs:
        change = changes.get(config.label)
        if change is None:
            yield config
            continue
        yield live(config, change)
        yield shadow(config, change)


def live(config: EmbeddingConfig, change: Change) -> EmbeddingConfig:
    """``config`` as its live column is served until the cutover: by the old model."""
    return replace(
        config,
        model=change.old_model,
        provider=change.old_provider,
        dimensions=change.old_dimensions,
    )


def shadow(config: EmbeddingConfig, change: Change) -> EmbeddingConfig:
    """The config that fills the shadow column (or chunk table) with the new model."""
    made = replace(
        config,
        column=change.vector_column if change.chunked else change.shadow,
        name=shadow_name(config.config_name),
        model=change.model,
        provider=change.provider,
        dimensions=change.dimensions,
        index=bool(change.index),
        shadow_of=config,
    )
    if change.chunked:
        made = replace(made, chunk_model=_shadow_chunk_model(made))
    return made


class _TableNow(str):
    """A shadow chunk table's name as a search's SQL names it: the live chunk table's once
    the change was cut over (a search compiled before the rename compiles again with it;
    Django quotes a table's name with ``"%s" % name``)."""

    def __str__(self) -> str:
        return table_now(str.__str__(self))


# How a chunk model is made: ``mixin.chunk_model``, set by the mixin when it is imported
# (it imports the search, which imports this module).
chunk_model_maker: Callable[..., Any] | None = None
_shadow_models: dict[tuple[str, str, int], Any] = {}
_shadow_models_lock = threading.Lock()


def _shadow_chunk_model(config: EmbeddingConfig) -> Any:
    """The model a search reads a shadow chunk table through. It is registered apart from
    the project's models (``makemigrations`` must not see it), beside its parent."""
    from django.apps.registry import Apps

    assert chunk_model_maker is not None, "django_autoembed.mixin sets it when imported"
    parent = config.model_class
    key = (config.label, config.chunk_table, config.get_dimensions())
    with _shadow_models_lock:
        model = _shadow_models.get(key)
        if model is None:
            apart = Apps(installed_apps=())
            apart.register_model(parent._meta.app_label, parent)
            model = chunk_model_maker(
                parent, config, apps=apart, table=_TableNow(config.chunk_table)
            )
            _shadow_models[key] = model
    return model


def table_now(table: str) -> str:
    """Where a shadow chunk table's vectors are now: the live chunk table once its change
    was cut over (``column_now``'s counterpart for chunks)."""
    with _known.lock:
        for changes in _known.by_database.values():
            for change in changes.values():
                if change.chunked and change.shadow_vectors == table and not change.in_flight:
                    return change.vectors
    return table


def searched(config: EmbeddingConfig) -> EmbeddingConfig:
    """The config a search of ``config`` reads now: its shadow once the change switched."""
    with _known.lock:
        change = next(
            (c[config.label] for c in _known.by_database.values() if config.label in c), None
        )
    if change is None or not change.in_flight or change.switched is None or config.shadow_of:
        return config
    return _shadow_config(change) or config


def reads_live(config: EmbeddingConfig) -> str | None:
    """The label of the change under way whose live vectors a search of ``config`` reads
    (by the old model, until the cutover); None: none is under way, or it reads the new
    ones (which the cutover renames: a search of them stays right after it)."""
    if config.shadow_of is not None:
        return None
    change = change_of(config)
    return change.config if change is not None else None


def mark_search(config: EmbeddingConfig, qs: Any) -> Any:
    """``qs``, a search of ``config``'s vectors, marked (on its query, which its clones copy)
    if it reads the live vectors of a change under way: evaluated after the cutover, it is
    refused rather than ranked at random (``check_live_read``, by ``EmbeddingQuerySet``);
    or if it reads the new ones, which the cutover renames (run again under their new name,
    inside a transaction too)."""
    live = reads_live(config)
    if live is not None:
        qs.query.autoembed_reads_live = live
    if config.shadow_of is not None:  # the cutover renames what it reads
        qs.query.autoembed_reads_shadow = True
    return qs


def check_live_read(using: str, label: str) -> None:
    """Raise ``ModelChanged`` if a search built to read the live vectors of the change of
    ``label`` (with a query of the old model) is evaluated after its cutover: those vectors
    are the new model's now, and would be ranked at random."""
    change = refresh(using).get(label)
    if change is None or change.in_flight:
        return
    raise ModelChanged(
        f"{label}: this search was built before the change to {change.model} was cut over, "
        f"with a query embedded by {change.old_model}; the vectors it would read are "
        f"{change.model}'s now. Build the search again (a search built now reads them "
        "with a query of the new model); keep a search's queryset no longer than the "
        "request that built it.",
        label,
    )


def index_state(using: str, config: EmbeddingConfig) -> Any:
    """A model change's new column's index, for status: ``ready`` once built, ``deferred``
    until then (it is built in bulk once the column is complete); None: not a new column."""
    from .hnsw.deferral import IndexStatus

    change = change_of(config) if config.shadow_of is not None else None
    if change is None or not change.index:
        return None
    with connections[using].cursor() as cursor:
        return IndexStatus.READY if _index_built(cursor, change) else IndexStatus.DEFERRED


def column_now(table: str, column: str) -> str:
    """Where a shadow column's vectors are now: the live column's name once its change was
    cut over (a search that read the change before its cutover compiles again with it)."""
    with _known.lock:
        for changes in _known.by_database.values():
            for change in changes.values():
                if (change.table, change.shadow) == (table, column) and not change.in_flight:
                    return change.column
    return column


def any_known() -> bool:
    """Whether this process knows of any change (under way, or cut over and not dropped)."""
    with _known.lock:
        return any(_known.by_database.values())


def change_of(config: EmbeddingConfig) -> Change | None:
    """The change under way for ``config`` (or the one its shadow fills), as last read."""
    with _known.lock:
        for change in (c for changes in _known.by_database.values() for c in changes.values()):
            if change.in_flight and config.label in (change.config, change.shadow_label):
                return change
    return None


def guard_shadow(using: str, config: EmbeddingConfig) -> None:
    """In the transaction that writes a shadow's vectors: hold its change (a cutover waits
    for the write), or raise ``ModelChanged`` if it was cut over or abandoned meanwhile (the
    column is gone; its jobs are the live config's now)."""
    live = config.shadow_of
    assert live is not None
    with connections[using].cursor() as cursor:
        cursor.execute(sqlfiles.statement("changes.sql", "hold", **_tables()), [live.label])
        row = cursor.fetchone()
    if row is None or row[0] is not None:
        shadow_gone(using, config)


def shadow_gone(using: str, config: EmbeddingConfig) -> NoReturn:
    """Raise ``ModelChanged`` for a write to a shadow whose change was cut over or abandoned
    meanwhile (its column or chunk table is gone; its jobs are the live config's now)."""
    live = config.shadow_of
    assert live is not None
    refresh(using, 0)
    raise ModelChanged(
        f"{config.label}: the change of {live.label} was cut over (or abandoned) while "
        "this batch was embedded: its jobs are the live config's now, and are embedded "
        "there.",
        config.label,
    )


# -- the worker's part -----------------------------------------------------------------


def tick(using: str, *, nudge: bool = False) -> None:
    """Read the changes (once a second at most), queue a new shadow's backfill, and move a
    complete one on: switch its searches, then cut it over. Any process may do it: each
    step is taken by one, under a lock or a conditional update.

    ``nudge`` (the endpoint): the push path calls only while jobs are due, so a change that
    waits only for time leaves a job due when the wait is over (one row's, of the live
    column, whose vector the store holds: nothing is paid for it)."""
    changes = refresh(using, TICK)
    for change in changes.values():
        if not change.in_flight:
            continue
        held = f"refused:{using}:{change.config}"
        with _known.lock:
            if _known.checked.get(held, 0.0) > time.monotonic():
                continue  # this role was refused a step lately: tried again later
        try:
            if change.queued is None:
                _queue_backfill(using, change)
            elif change.automatic:
                waits = advance(using, change)
                if nudge:
                    _nudge(using, change, waits)
        except NotOwner as exc:
            _refused(using, change, str(exc), held)
        except ConfigurationError as exc:
            _failed(using, change, str(exc))
            logger.error("%s: the change to %s waits: %s", change.config, change.model, exc)
        except (ProgrammingError, psycopg.errors.InsufficientPrivilege) as exc:
            if privilege_refused(exc) is None:
                raise
            _refused(using, change, refused_step(change, exc), held)
        except OperationalError as exc:  # a lock not granted in time: a later tick tries again
            wait = _back_off(using, change)
            said = str(exc).strip().splitlines()[0]
            _failed(using, change, f"{said} (tried again in {wait:.0f} s)")
            logger.warning(
                "%s: the cutover to %s waits %.0f s for its locks: %s",
                change.config,
                change.model,
                wait,
                said,
            )


# Seconds a process leaves a change alone after its database role was refused a step of
# it (not the tables' owner, or a grant missing): each try is counted on the change.
REFUSED_HOLD = 60.0
# The refusals this process said (said once, counted each time), by database and config.
_said_refused: set[tuple[str, str, str]] = set()


def require_owner(using: str, change: Change) -> None:
    """Raise ``NotOwner`` unless this role owns the tables the change's index build, switch
    and cutover alter (checked before any lock is taken: a role with UPDATE may lock the
    table, and only the rename after it would fail)."""
    tables = [change.table]
    if change.chunked:
        tables += [change.vectors, change.shadow_vectors]
    names = [sql.Identifier(t).as_string(None) for t in tables]
    with connections[using].cursor() as cursor:
        cursor.execute(sqlfiles.statement("changes.sql", "owns"), [names])
        owns = cursor.fetchone()[0]
    if owns is False:
        raise NotOwner(
            f"{change.config}: this database role may build the new vectors but not index or "
            f"swap them in: only the owner of {change.table} may, as for migrations. Run "
            f"`python manage.py autoembed_cutover {change.config}` as the owner (it builds "
            "the index and cuts over), or run a worker as the owner."
        )


def privilege_refused(exc: BaseException) -> psycopg.errors.InsufficientPrivilege | None:
    """Postgres's refusal behind ``exc`` (a grant missing, or not the owner), or None."""
    for error in (exc, exc.__cause__):
        if isinstance(error, psycopg.errors.InsufficientPrivilege):
            return error
    return None


def refused_step(change: Change, exc: BaseException) -> str:
    """What a role refused a step of ``change`` is told: who may, and how."""
    error = privilege_refused(exc)
    said = (error.diag.message_primary if error is not None else None) or str(exc).strip()
    if said.startswith("must be owner"):
        return (
            f"{change.config}: {said}: only the owner of {change.table} may index or swap in "
            f"the new vectors. Run `python manage.py autoembed_cutover {change.config}` as the "
            "owner, or run a worker as the owner."
        )
    return (
        f"{change.config}: {said}: this database role lacks a grant the change needs. Run "
        "`python manage.py autoembed_grants ROLE --apply` as the owner (a config stored in "
        "chunks needs it again after the migration that began its change: its new chunk "
        "table is a new table)."
    )


def _refused(using: str, change: Change, why: str, held: str) -> None:
    """Count a step this role was refused on the change, say it once, and leave the change
    alone for REFUSED_HOLD seconds in this process."""
    _failed(using, change, why)
    with _known.lock:
        _known.checked[held] = time.monotonic() + REFUSED_HOLD
        first = (using, change.config, why) not in _said_refused
        _said_refused.add((using, change.config, why))
    if first:
        logger.warning("%s", why)


def _failed(using: str, change: Change, error: str) -> None:
    """Count a failed step on the change, and say why: ``autoembed_status`` shows both."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            sqlfiles.statement("changes.sql", "failed", **_tables()), [error[:2000], change.config]
        )


def _nudge(using: str, change: Change, waits: str) -> None:
    """Leave one job of the live column due when the change's next step may be taken: the
    push path posts only due jobs, and the last of the new column's are acked only after
    the call that embedded them (at most one such job a step, its vector from the store)."""
    if waits == "switched" or waits.startswith("searches read"):
        wait = notice()
    elif waits.startswith("began"):
        wait = notice() - change.age
    else:  # jobs or rows left: the jobs being done now are acked after this call
        wait = READY_EVERY
    key = f"nudge:{using}:{change.config}"
    now = time.monotonic()
    with _known.lock:
        if _known.checked.get(key, 0.0) > now:
            return  # one is due already
        _known.checked[key] = now + max(wait, 0.0) + 1.0
    live = next((c for c in registry.all() if c.label == change.config), None)
    if live is None:
        return
    from .backfill import row_names

    with connections[using].cursor() as cursor:
        schema, names = row_names(cursor, live, using)
        cursor.execute(sqlfiles.statement("changes.sql", "one_row", **names))
        row = cursor.fetchone()
        if row is None:
            return
        target = queue.Target(schema, live.table, live.function_name, live.queue_column)
        body = {**queue.Message.new(target, [row[0]]).body, "origin": queue.NUDGE}
        queue.send_batch(cursor, [body], delay=wait + 1)


def _shadow_config(change: Change) -> EmbeddingConfig | None:
    for config in registry.all():
        if config.label == change.shadow_label:
            return config
    return None


def _queue_backfill(using: str, change: Change) -> None:
    from .backfill import backfill

    config = _shadow_config(change)
    if config is None:
        return  # this process does not declare the config (another one will)
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(
            sqlfiles.statement("changes.sql", "claim_backfill", **_tables()), [change.config]
        )
        if cursor.fetchone() is None:
            return
        queued = backfill(config, using=using)
    logger.info(
        "%s: %s rows queued for %s (%s).", change.config, queued, change.shadow, change.model
    )
    refresh(using, 0)


def _back_off(using: str, change: Change) -> float:
    """Hold this process's next cutover try of ``change`` (growing waits): a table held by
    a long transaction is not asked for again and again, each time queueing its readers."""
    key = f"backoff:{using}:{change.config}"
    first, most = CUTOVER_BACKOFF
    with _known.lock:
        wait = min(most, 2 * _known.checked.get(key + ":wait", first / 2))
        _known.checked[key + ":wait"] = wait
        _known.checked[key] = time.monotonic() + wait
    return wait


def advance(using: str, change: Change, *, now: bool = False, allow_missing: bool = False) -> str:
    """Move ``change`` one step on if it may go: ``"switched"``, ``"cut over"``, or why it
    waits. ``now``: cut over as soon as the shadow is complete (``autoembed_cutover``)."""
    if change.switched is None:
        key = f"{using}:{change.config}"
        with _known.lock:
            if not now and time.monotonic() - _known.checked.get(key, -1e9) < READY_EVERY:
                return "checked lately"
            _known.checked[key] = time.monotonic()
        waiting = why_waiting(using, change, allow_missing=allow_missing)
        if waiting == INDEX_NOT_BUILT:
            require_owner(using, change)
            build_index(using, change)
            waiting = why_waiting(using, change, allow_missing=allow_missing)
        if waiting:
            return waiting
        require_owner(using, change)  # who may not cut over does not switch either
        if not now and change.age < notice():
            return f"began {change.age:.0f} s ago; every process must have seen it first"
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(
                sqlfiles.statement("changes.sql", "switch", **_tables()), [change.config]
            )
        logger.info("%s: searches read %s from now on.", change.config, change.shadow)
        change = refresh(using, 0).get(change.config, change)
        if not now:
            return "switched"
    wait = notice() - (change.switched_for or 0.0)
    if wait > 0 and not now:
        return f"searches read the shadow; the cutover follows in {wait:.0f} s"
    with _known.lock:
        held = _known.checked.get(f"backoff:{using}:{change.config}", 0.0) - time.monotonic()
    if held > 0 and not now:
        return f"searches read the shadow; the cutover tries its locks again in {held:.0f} s"
    require_owner(using, change)  # before the cutover's lock: only the owner may rename
    if now and wait > 0:
        time.sleep(wait)  # searches that began before the switch end first
    cutover(using, change)
    return "cut over"


def why_waiting(using: str, change: Change, *, allow_missing: bool = False) -> str | None:
    """Why the shadow of ``change`` is not complete yet (None: it is)."""
    config = _shadow_config(change)
    if config is None:
        return "this process does not declare the config"
    names = _names(using, change, config)
    with connections[using].cursor() as cursor:
        cursor.execute(
            sqlfiles.statement("changes.sql", "shadow_jobs", **names),
            [change.table, change.shadow],
        )
        jobs = cursor.fetchone()[0]
        if jobs:
            return f"{jobs} jobs of the shadow are queued"
        cursor.execute(
            sqlfiles.statement("changes.sql", "shadow_batches", **names), [change.shadow_label]
        )
        batches = cursor.fetchone()[0]
        if batches:
            return f"{batches} Batch API batches of the shadow are not collected yet"
        missing_key = "shadow_missing_chunks" if change.chunked else "shadow_missing"
        cursor.execute(
            sqlfiles.statement("changes.sql", missing_key, **names), [change.shadow_label]
        )
        missing, dead = cursor.fetchone()
        if dead and not allow_missing:
            return (
                f"{dead} rows failed in the new column ({change.shadow_label} in "
                "`autoembed_status`): fix them and `python manage.py autoembed_retry --config "
                f"{change.shadow_label}`, or cut over without their vectors: "
                f"`python manage.py autoembed_cutover {change.config} --allow-missing`"
            )
        if missing > dead:
            return f"{missing - dead} rows have no vector in the shadow yet"
        if change.index and not _index_built(cursor, change):
            return INDEX_NOT_BUILT
    return None


INDEX_NOT_BUILT = "its index is not built yet"


def _index_built(cursor: Any, change: Change) -> bool:
    name = sql.Identifier(change.shadow_index).as_string(None)
    cursor.execute(sqlfiles.statement("changes.sql", "index_valid"), [name])
    return bool(cursor.fetchone()[0])


def build_index(using: str, change: Change) -> bool:
    """Build the shadow's HNSW index in bulk, now that every row has its vector (much faster
    than keeping it up row by row through the backfill), CONCURRENTLY: live edits go on.
    False: another process is building it."""
    from .hnsw.sessions import Advisory, Autocommit, apply, build_settings

    config = _shadow_config(change)
    if config is None:
        return False
    name = sql.Identifier(change.shadow_index)
    options = change.index_options
    with Advisory(using, config) as got:
        if not got:
            return False
        started = time.monotonic()
        with Autocommit(using) as conn:
            apply(conn, build_settings())
            valid = conn.execute(
                sqlfiles.statement("changes.sql", "index_state"), [name.as_string(None)]
            ).fetchone()[0]
            if valid is False:  # a build that died half-way: start afresh
                conn.execute(sqlfiles.statement("changes.sql", "drop_index", index=name))
            if not valid:
                conn.execute(
                    sqlfiles.statement(
                        "changes.sql",
                        "build_index",
                        index=name,
                        table=sql.Identifier(change.shadow_vectors),
                        shadow=sql.Identifier(
                            change.vector_column if change.chunked else change.shadow
                        ),
                        opclass=sql.Identifier(options.get("opclass", "halfvec_cosine_ops")),
                        m=sql.Literal(int(options.get("m", 16))),
                        ef=sql.Literal(int(options.get("ef_construction", 64))),
                    )
                )
    logger.info(
        "%s: built the index of %s in bulk in %.1f s.",
        change.config,
        change.shadow,
        time.monotonic() - started,
    )
    return True


def progress(using: str, change: Change) -> tuple[int, int]:
    """Rows of the shadow left to embed, and done."""
    config = _shadow_config(change)
    if config is None:
        return 0, 0
    with connections[using].cursor() as cursor:
        key = "shadow_left_chunks" if change.chunked else "shadow_left"
        cursor.execute(sqlfiles.statement("changes.sql", key, **_names(using, change, config)))
        left, done = cursor.fetchone()
    return int(left), int(done)


def _names(using: str, change: Change, config: EmbeddingConfig) -> dict[str, sql.Composable]:
    from .backfill import row_names

    with connections[using].cursor() as cursor:
        _, names = row_names(cursor, config, using)
    return {
        **_tables(),
        "queue": queue.tables()["queue"],
        "table": names["table"],
        "pk": names["pk"],
        "fn": names["fn"],
        "shadow": sql.Identifier(change.shadow),
        "col": sql.Identifier(change.column),
        "previous": sql.Identifier(change.previous),
        "live": sql.Identifier(change.vectors),
        "next": sql.Identifier(change.shadow_vectors),
    }


def cutover(using: str, change: Change) -> bool:
    """Swap the shadow in for the live column, in one short transaction (False: another
    process did it, or the change was abandoned)."""
    from .triggers import EmbeddingTrigger

    config = _shadow_config(change)
    if config is None:
        raise ConfigurationError(
            f"{change.config}: this process does not declare the config; run the cutover "
            "where the code that declares it is deployed."
        )
    names = _names(using, change, config)
    statement = sqlfiles.statement
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(f"set local lock_timeout = '{CUTOVER_LOCK_TIMEOUT}'")
        cursor.execute(statement("changes.sql", "lock", **names), [change.config])
        locked = cursor.fetchone()
        if locked is None:
            return False
        drop = bool(locked[1])  # as it is now: the drop migration may have run meanwhile
        # The table's lock last, and briefly: searches queue behind a lock being waited for.
        # An autovacuum of the table yields only to a lock waited for deadlock_timeout: then
        # that long, once (a fill leaves the table to vacuum, and its HNSW indexes take
        # minutes), rather than giving up before it yields, again and again.
        cursor.execute(
            statement("changes.sql", "table_lock_timeout", **names),
            [sql.Identifier(change.table).as_string(None), TABLE_LOCK_TIMEOUT],
        )
        cursor.execute(statement("changes.sql", "lock_table", **names))

        def rename(key: str, old: str, new: str) -> None:
            cursor.execute(
                statement(
                    "changes.sql", key, old=sql.Identifier(old), new=sql.Identifier(new), **names
                )
            )

        if change.chunked:
            cursor.execute(statement("changes.sql", "lock_chunk_tables", **names))
            _swap_chunk_tables(cursor, change)
        else:
            rename("rename_column", change.column, change.previous)
            rename("rename_column", change.shadow, change.column)
            if change.index:
                rename("rename_index", change.index, index_name(change.table, change.previous))
                rename("rename_index", change.shadow_index, change.index)
        for statement_text in EmbeddingTrigger.for_config(config).drop_statements(
            config.model_class
        ):
            cursor.execute(statement_text)
        cursor.execute(
            statement("changes.sql", "retarget", **names),
            [change.column, _live_function(config, change), change.table, change.shadow],
        )
        cursor.execute(statement("changes.sql", "forget_live_failures", **names), [change.config])
        cursor.execute(
            statement("changes.sql", "move_failures", **names),
            [change.config, change.shadow_label],
        )
        cursor.execute(
            statement("changes.sql", "move_identity", **names),
            [change.config, change.provider, change.model, change.dimensions],
        )
        cursor.execute(statement("changes.sql", "forget_identity", **names), [change.shadow_label])
        cursor.execute(
            statement("changes.sql", "move_usage", **names), [change.config, change.shadow_label]
        )
        cursor.execute(statement("changes.sql", "forget_usage", **names), [change.shadow_label])
        cursor.execute(statement("changes.sql", "cut_over", **names), [change.config])
        if drop:
            cursor.execute(statement("changes.sql", drop_previous_key(change), **names))
            cursor.execute(statement("changes.sql", "forget_change", **names), [change.config])
    from . import identity

    identity.forget_all()
    refresh(using, 0)
    logger.info(
        "%s: cut over to %s; the old vectors are in %s until the drop migration.",
        change.config,
        change.model,
        change.previous,
    )
    return True


def _live_function(shadow_config: EmbeddingConfig, change: Change) -> str:
    assert shadow_config.shadow_of is not None
    return shadow_config.shadow_of.function_name


def drop_previous_key(change: Any) -> str:
    """The statement that drops a cut-over change's old vectors (a column, or chunk table)."""
    return "drop_previous_chunks" if "." in change.column else "drop_previous"


def unique_chunks_name(chunk_table: str) -> str:
    """The name of a chunk table's unique (parent, number), as the mixin declares it."""
    return short_name(chunk_table, "parent_number", "uniq")


def _swap_chunk_tables(cursor: Any, change: Change) -> None:
    """The new chunk table takes the live one's name and the names of its keys and index
    (as the migrations' state knows them); the live one is kept as ``previous`` until the
    drop, with no foreign key (its rows are no longer deleted with their parent rows)."""
    live, new, previous = change.vectors, change.shadow_vectors, change.previous
    column = change.vector_column

    def relations(table: str) -> list[str]:
        regclass = sql.Identifier(table).as_string(None)
        cursor.execute(sqlfiles.statement("changes.sql", "relations"), [regclass, regclass])
        return [name for (name,) in cursor.fetchall()]

    def rename(old: str, to: str) -> None:
        cursor.execute(
            sqlfiles.statement(
                "changes.sql", "rename_relation", old=sql.Identifier(old), new=sql.Identifier(to)
            )
        )

    def renamed(name: str, prefix: str, to: str, known: dict[str, str]) -> str:
        if name in known:
            return known[name]
        rest = name[len(prefix) :] if name.startswith(prefix) else f"_{name}"
        return short_name(to, rest.lstrip("_"))

    cursor.execute(
        sqlfiles.statement("changes.sql", "foreign_keys"), [sql.Identifier(live).as_string(None)]
    )
    for (key,) in cursor.fetchall():
        cursor.execute(
            sqlfiles.statement(
                "changes.sql",
                "drop_constraint",
                table=sql.Identifier(live),
                name=sql.Identifier(key),
            )
        )
    for name in relations(live):
        rename(name, renamed(name, live, previous, {}))
    rename(live, previous)
    known = {
        change.shadow_index: change.index or index_name(live, column),
        unique_chunks_name(new): unique_chunks_name(live),
    }
    for name in relations(new):
        rename(name, renamed(name, new, live, known))
    rename(new, live)


# -- what status and migrate say -----------------------------------------------------------


def summary(using: str, configs: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """The changes under way, for ``autoembed_status``: rows done and left, tokens spent,
    the estimated cost and time of what is left, and what the cutover waits for.
    ``configs``: the status rows already counted (the shadow's tokens are read there)."""
    tokens = {c.config: c.tokens_30d for c in configs}
    out: list[dict[str, Any]] = []
    for change in refresh(using, 0).values():
        if not change.in_flight:
            out.append(_entry(change, "cut over", 0, 0, tokens, None, None, None))
            continue
        try:
            with transaction.atomic(using=using):  # a refusal ends no transaction
                out.append(_under_way(using, change, tokens))
        except (ProgrammingError, psycopg.errors.InsufficientPrivilege) as exc:
            if privilege_refused(exc) is None:
                raise
            entry = _entry(change, change.phase, 0, 0, tokens, None, None, None)
            out.append({**entry, "unreadable": refused_step(change, exc)})
    return out


def _under_way(using: str, change: Change, tokens: dict[str, int]) -> dict[str, Any]:
    from .batches import estimate

    left, done = progress(using, change)
    config = _shadow_config(change)
    cost = None
    if config is not None and left:
        [backlog] = estimate.estimate([config], using=using)
        cost = backlog.api_price
    seconds = None
    if change.queued is not None and done and left:
        rate = done / max(change.age, 1e-6)
        seconds = left / rate
    waiting = why_waiting(using, change) if change.switched is None else None
    return _entry(change, change.phase, done, left, tokens, cost, seconds, waiting)


def _entry(
    change: Change,
    phase: str,
    done: int,
    left: int,
    tokens: dict[str, int],
    cost: float | None,
    seconds: float | None,
    waiting: str | None,
) -> dict[str, Any]:
    return {
        "config": change.config,
        "from": f"{change.old_provider} {change.old_model} ({change.old_dimensions} dimensions)",
        "to": f"{change.provider} {change.model} ({change.dimensions} dimensions)",
        "phase": phase,
        "shadow": change.shadow,
        "done": done,
        "left": left,
        "tokens": tokens.get(change.shadow_label, 0),
        "cost_left_usd": cost,
        "seconds_left": seconds,
        "automatic": change.automatic,
        "waiting": waiting,
        "previous": change.previous if change.cut_over is not None else None,
        "failed_tries": change.failed_tries,
        "last_error": change.last_error or None,
    }


def describe(entry: dict[str, Any]) -> str:
    """One status line for a change (``summary``'s entry)."""
    head = f"model change {entry['config']}: {entry['from']} -> {entry['to']}, {entry['phase']}"
    if entry["phase"] == "cut over":
        return (
            f"{head}; the old vectors are kept in {entry['previous']} until the drop "
            "migration (`makemigrations` writes it, `migrate` applies it)"
        )
    if entry.get("unreadable"):
        return f"{head}: not counted: {entry['unreadable']}"
    total = entry["done"] + entry["left"]
    share = f" ({100 * entry['done'] / total:.0f} %)" if total else ""
    parts = [f"{entry['done']:,} of {total:,} rows{share} in {entry['shadow']}"]
    parts.append(f"{entry['tokens']:,} tokens so far")
    if entry["cost_left_usd"] is not None:
        parts.append(f"~${entry['cost_left_usd']:.4f} to go")
    if entry["seconds_left"] is not None:
        parts.append(f"~{_duration(entry['seconds_left'])} left")
    if entry["waiting"]:
        parts.append(f"the cutover waits: {entry['waiting']}")
    if entry["failed_tries"]:
        parts.append(f"{entry['failed_tries']} failed tries, the last: {entry['last_error']}")
    parts.append(
        "cuts over automatically when complete"
        if entry["automatic"]
        else f"held: `python manage.py autoembed_cutover {entry['config']}` cuts over"
    )
    return f"{head}: " + "; ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# Where ``begin`` says what a change costs: ``migrate`` prints it at once, inside the
# migration's transaction, before any worker can see the backfill (else it is logged).
announce_to: Callable[[str], None] | None = None


def begin(using: str, label: str) -> None:
    """A change's migration recorded it: say what it moves and what embedding every row
    again costs (before a job exists), then queue the new column's backfill."""
    from .backfill import backfill

    change = refresh(using, 0).get(label)
    config = _shadow_config(change) if change is not None else None
    if change is None or config is None:
        return  # a worker that declares it queues the backfill (tick)
    said = "\n".join(_announce(using, change, config))
    if announce_to is not None:
        announce_to(said)
    else:
        logger.info("%s", said)
    backfill(config, using=using)
    EmbeddingChange.objects.using(using).filter(pk=label).update(queued=timezone.now())
    refresh(using, 0)


def _announce(using: str, change: Change, config: EmbeddingConfig) -> list[str]:
    from .batches import estimate

    lines: list[str] = []
    lines.append(
        f"{change.config}: its vectors move from {change.old_provider} {change.old_model} "
        f"({change.old_dimensions} dimensions) to {change.provider} {change.model} "
        f"({change.dimensions} dimensions), beside the live ones in {change.shadow}. "
        "Searches read the live vectors until the cutover."
    )
    lines += estimate.render(
        estimate.estimate([config], using=using, every_row=True), "Embedding every row again"
    )
    lines.append(
        "A worker (or the push path) fills it, live edits first, then "
        + (
            "cuts over once it is complete."
            if change.automatic
            else f"waits for `python manage.py autoembed_cutover {change.config}`."
        )
        + " `python manage.py autoembed_status` shows the progress; reversing this "
        "migration before the cutover abandons the change with nothing lost."
    )
    return lines
