"""HNSW maintenance during backfills: defer it, then build the index in bulk.

Every row written to a column with an HNSW index costs a graph insert (about
7 ms at 1,536 dimensions on two cores); a bulk build costs a fraction of that
per row. So when a config's backlog is large next to what its index already
holds, a worker drops the index (``DROP INDEX CONCURRENTLY``), embeds the
backlog without graph maintenance, and once the backlog has drained builds
the same index again in bulk (``CREATE INDEX CONCURRENTLY``, with more
maintenance memory and parallel workers). Neither step blocks the
application's writes; searches meanwhile scan exactly, over the rows
embedded so far. Django's migration state never changes: the index is the
one the migrations created, by the same name and definition.

The state of each deferred index is kept in ``IndexState`` so that several
workers agree, ``autoembed_status`` can say where it stands, and the
database checks do not call a deferred index missing. A session advisory
lock per config keeps two workers from changing an index at once; a worker
that dies mid-way leaves a state the next one finishes.

An index is dropped only once its provider has answered (a revoked key must
not leave the table without its index), and built again at once when that
provider pauses or a ``--once`` run leaves a backlog it cannot drain. A
failure to defer or build is an incident: counted, shown by status, logged
once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import psycopg
from django.db import DatabaseError, connections, models, transaction
from psycopg import sql

from .. import identity, incidents, providers, settings
from .. import sql as sqlfiles
from ..declarations import EmbeddingConfig, registry
from ..incidents import IncidentKind
from .backlog import CHECK_EVERY, PER_ROW_TTL, Backlog
from .indexes import managed_index
from .sessions import Advisory, Autocommit, apply, build_settings, launched

logger = logging.getLogger(__name__)


class IndexStatus(StrEnum):
    """Where a config's HNSW index stands (``state_of``)."""

    READY = "ready"
    DEFERRED = "deferred"  # dropped until its backlog drains
    BUILDING = "building"  # being built again, in bulk
    MISSING = "missing"  # missing or invalid, and no worker is on it


DEFERRED, BUILDING = IndexStatus.DEFERRED, IndexStatus.BUILDING
# A backlog this many times what the index holds is cheaper to embed without the index
# and build in bulk afterwards (per-row inserts ~7 ms, a bulk build ~1.5-2 ms a row).
DEFER_RATIO = 0.5
# Seconds an answer of a provider counts as proof that it works (before dropping an index).
ANSWER_FRESH = 300.0


class IndexState(models.Model):
    """An HNSW index a worker has taken down for a backfill, or is building again."""

    config = models.CharField(max_length=255, unique=True, help_text="app_label.Model.config")
    index = models.CharField(max_length=63)
    table = models.CharField(max_length=255)
    state = models.CharField(
        max_length=16, choices=[(DEFERRED.value, DEFERRED.value), (BUILDING.value, BUILDING.value)]
    )
    since = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "django_autoembed"

    def __str__(self) -> str:
        return f"{self.config}: index {self.index} {self.state} since {self.since:%Y-%m-%d %H:%M}"


def should_defer(backlog: int, indexed: int, *, minimum: int | None) -> bool:
    """Whether embedding ``backlog`` rows is cheaper with the index dropped and rebuilt after."""
    if not minimum or backlog < minimum:
        return False
    return backlog >= indexed * DEFER_RATIO


class Indexing:
    """One process's view of index deferral on one database; a worker's lanes share it.

    ``background`` builds in a thread of its own (the endpoint: a build takes longer
    than pg_net waits for an answer); otherwise the caller builds.
    """

    def __init__(self, using: str, *, background: bool = False) -> None:
        self.using = using
        self.background = background
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._deferred: tuple[set[str], float] | None = None
        self._warned: set[str] = set()
        self._ddl: set[Any] = set()  # connections dropping or building an index: cancelled on stop
        self._lock_timeout: float | None = None  # overrides INDEX_LOCK_TIMEOUT (finish)
        self.backlog = Backlog(using)
        self._answered: dict[str, float] = {}  # provider key: when it last answered
        self._probing = threading.Lock()
        self._refused: dict[str, float] = {}  # provider key: when a probe last failed

    # -- reading the backlog --------------------------------------------------

    # -- the two transitions --------------------------------------------------

    def tick(self, labels: set[str]) -> None:
        """Before a batch of these configs: defer an index worth deferring, build one drained.

        A failure leaves the index as it was (the rows are embedded either way, with the
        index kept up row by row) and is counted as an incident of its config.
        """
        try:
            self._tick(labels)
        except (DatabaseError, psycopg.Error) as exc:
            self._failed("look at the backlog for", "the queue", exc)

    def _tick(self, labels: set[str]) -> None:
        minimum = settings.current().index_defer_rows
        deferred = self.deferred()
        if not (minimum and labels) and not deferred:
            return
        backlog = self.backlog.rows()
        for config in deferred:
            if self.backlog.drained(config, backlog, minimum):
                self._attempt("build", config, self._build_now_or_behind)
        if not minimum:
            return
        skip = {c.label for c in deferred}
        for config in registry.on_database(self.using):
            if config.label not in labels or config.label in skip or managed_index(config) is None:
                continue
            rows = backlog.get(config.label, 0)
            if not rows:
                continue
            queued = self._attempt(
                "estimate the backlog of", config, self.backlog.expected_vectors, rows
            )
            if queued is None or not should_defer(
                int(queued), self.backlog.indexed(config), minimum=minimum
            ):
                continue
            if self._provider_works(config):
                self._attempt("defer", config, self.defer)

    def _attempt(
        self, what: str, config: EmbeddingConfig, action: Callable[..., Any], *args: Any
    ) -> Any:
        """Run one step on a config's index; a failure is counted, not raised (None)."""
        try:
            return action(config, *args)
        except (DatabaseError, psycopg.Error) as exc:
            self._failed(what, config.label, exc)
            return None

    def _failed(self, what: str, subject: str, exc: BaseException) -> None:
        incidents.report(
            self.using,
            IncidentKind.INDEX_BUILD if what == "build" else IncidentKind.INDEX_DEFER,
            subject,
            f"could not {what} its HNSW index: {str(exc).strip()}. Meanwhile the backlog is "
            "embedded with the index kept up row by row (slower). Check the database log and "
            "the worker's role; `manage.py autoembed_status` counts these.",
        )

    # -- the provider's word -------------------------------------------------------

    def heard(self, keys: set[str]) -> None:
        """These providers (``providers.pause_key``) answered with vectors just now."""
        now = time.monotonic()
        with self._lock:
            self._answered.update(dict.fromkeys(keys, now))

    def _provider_works(self, config: EmbeddingConfig) -> bool:
        """Whether the config's provider answered lately, or answers a probe now: an index is
        not dropped for a backlog that a revoked key or an unknown model keeps from draining,
        nor for one a changed model keeps from draining (``identity``)."""
        if any(identity.configs_refused(self.using, [config])):
            return False
        key = providers.pause_key(config)
        with self._probing:  # one probe at a time: the lanes that wait take its answer
            with self._lock:
                seen = self._answered.get(key)
            if seen is not None and time.monotonic() - seen < ANSWER_FRESH:
                return True
            refused = self._refused.get(key)
            if refused is not None and time.monotonic() - refused < PER_ROW_TTL:
                return False  # asked lately: the batch itself tells the provider's state
            if providers.probe(config):
                self.heard({key})
                return True
            self._refused[key] = time.monotonic()
        return False

    def rebuild_for(self, key: str) -> None:
        """``key``'s provider was paused: its deferred indexes are built again now, backlog or
        not (searches should not scan exactly for as long as the pause lasts)."""
        with self._lock:  # no index is dropped for it again before a probe says it works
            self._answered.pop(key, None)
            self._refused[key] = time.monotonic()
        for config in self.deferred(fresh=True):
            if key in (providers.pause_key(config), identity.pause_key(config)):
                logger.warning(
                    "Building the HNSW index of %s again now: its provider is paused, and its "
                    "backlog waits for it.",
                    config.label,
                    extra={"config": config.label},
                )
                self._attempt("build", config, self._build_now_or_behind)

    def _build_now_or_behind(self, config: EmbeddingConfig) -> None:
        if not self.background:
            self.build(config)
            return
        with self._lock:
            running = self._threads.get(config.label)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(
                target=self._build_quietly,
                args=(config,),
                name=f"autoembed-index-{config.label}",
                daemon=True,
            )
            self._threads[config.label] = thread
        thread.start()

    def _build_quietly(self, config: EmbeddingConfig) -> None:
        try:
            self._attempt("build", config, self.build)
        finally:
            connections[self.using].close()  # this thread's own Django connection

    def finish(self, *, leaving: bool = False, lock_timeout: float | None = None) -> None:
        """The queue is drained (``--once``), or a batch may have drained it (the endpoint:
        no later POST may come to notice): build every deferred index whose backlog is gone;
        or, ``leaving`` a backlog this run cannot drain, every deferred index. A build waits
        ``lock_timeout`` seconds at most for transactions holding the table (default
        INDEX_LOCK_TIMEOUT)."""
        self._lock_timeout = lock_timeout
        try:
            deferred = self.deferred(fresh=True)
            backlog = self.backlog.rows(fresh=True) if deferred and not leaving else {}
        except (DatabaseError, psycopg.Error) as exc:
            self._failed("look at the backlog for", "the queue", exc)
            return
        for config in deferred:
            minimum = settings.current().index_defer_rows
            if leaving or self.backlog.drained(config, backlog, minimum):
                self._attempt("build", config, self._build_now_or_behind)

    def deferred(self, *, fresh: bool = False) -> list[EmbeddingConfig]:
        """Configs of this database whose index is deferred or was left half-built."""
        with self._lock:
            cached = self._deferred
        if fresh or cached is None or time.monotonic() - cached[1] >= CHECK_EVERY:
            try:
                with transaction.atomic(using=self.using):
                    labels = set(
                        IndexState.objects.using(self.using).values_list("config", flat=True)
                    )
            except DatabaseError:  # not migrated yet, or not granted: nothing is deferred by us
                labels = set()
            cached = (labels, time.monotonic())
            with self._lock:
                self._deferred = cached
        return [c for c in registry.on_database(self.using) if c.label in cached[0]]

    def defer(self, config: EmbeddingConfig) -> bool:
        index = managed_index(config)
        if index is None:
            return False
        with Advisory(self.using, config) as got:
            if not got or IndexState.objects.using(self.using).filter(config=config.label).exists():
                return False
            if not self._may_change(config):
                return False
            # Recorded first: a drop cut short (a transaction held the table past
            # INDEX_LOCK_TIMEOUT, a signal) leaves the index invalid, and the build that
            # follows the backlog drops what is left and builds it afresh.
            IndexState.objects.using(self.using).create(
                config=config.label,
                index=index.name,
                table=config.vector_model._meta.db_table,
                state=DEFERRED,
            )
            with Autocommit(self.using, self._ddl, self._lock_timeout) as conn:
                conn.execute(
                    sqlfiles.statement("hnsw.sql", "drop_index", index=sql.Identifier(index.name))
                )
        self._forget()
        incidents.clear(self.using, IncidentKind.INDEX_DEFER, config.label, anyone=True)
        logger.info(
            "Deferring the HNSW index %s of %s until its backlog drains, to build it in bulk.",
            index.name,
            config.label,
            extra={"config": config.label, "index": index.name},
        )
        return True

    def build(self, config: EmbeddingConfig) -> bool:
        index = managed_index(config)
        if index is None:
            IndexState.objects.using(self.using).filter(config=config.label).delete()
            return False
        with Advisory(self.using, config) as got:
            if not got:
                return False  # another worker is on it
            updated = IndexState.objects.using(self.using).filter(config=config.label)
            if not updated.update(state=BUILDING):
                return False
            started = time.monotonic()
            model = config.vector_model
            name = sql.Identifier(index.name)
            workers: list[int] = []
            with Autocommit(self.using, self._ddl, self._lock_timeout) as conn:
                conn.add_notice_handler(lambda notice: workers.extend(launched(notice)))
                apply(conn, build_settings(self._lock_timeout))
                valid = conn.execute(
                    sqlfiles.statement("hnsw.sql", "index_valid"), [name.as_string(None)]
                ).fetchone()
                if valid and valid[0] is False:  # a build that died half-way: start afresh
                    conn.execute(sqlfiles.statement("hnsw.sql", "drop_index", index=name))
                    valid = None
                if not valid:
                    with connections[self.using].schema_editor(atomic=False) as editor:
                        statement = str(index.create_sql(model, editor, concurrently=True))
                    conn.execute(statement)
            updated.delete()
        self._forget()
        incidents.clear(self.using, IncidentKind.INDEX_BUILD, config.label, anyone=True)
        logger.info(
            "Built the HNSW index %s of %s in bulk in %.1f s, with %d parallel workers.",
            index.name,
            config.label,
            time.monotonic() - started,
            max(workers, default=0),
            extra={"config": config.label, "index": index.name},
        )
        return True

    # -- helpers -----------------------------------------------------------------

    def cancel(self) -> None:
        """Stop a drop or a bulk build under way (the worker is stopping): its state stays
        recorded, and the next worker finishes it."""
        with self._lock:
            running = list(self._ddl)
        for conn in running:
            try:
                conn.cancel_safe()
            except psycopg.Error:
                pass

    def _forget(self) -> None:
        with self._lock:
            self._deferred = None
        self.backlog.forget()

    def _may_change(self, config: EmbeddingConfig) -> bool:
        """Only the table's owner may drop and create its indexes; say so once otherwise."""
        table = config.vector_model._meta.db_table
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                sqlfiles.statement("hnsw.sql", "owns_table"),
                [sql.Identifier(table).as_string(None)],
            )
            owner = bool(cursor.fetchone()[0])
        if not owner and config.label not in self._warned:
            self._warned.add(config.label)
            logger.warning(
                "%s has a large backlog, but this worker's role does not own %s, so its HNSW "
                "index is "
                "kept up row by row (slower). Run backfills as the table's owner, or grant the "
                "owner's role to this one, to have the index built in bulk.",
                config.label,
                config.table,
            )
        return owner


def state_of(using: str, config: EmbeddingConfig) -> IndexStatus | None:
    """Where a config's index stands (None: no index of ours)."""
    index = managed_index(config)
    if index is None:
        return None
    try:
        with transaction.atomic(using=using):
            row = (
                IndexState.objects.using(using)
                .filter(config=config.label)
                .values_list("state")
                .first()
            )
    except DatabaseError:
        row = None
    if row:
        return IndexStatus(row[0])
    with connections[using].cursor() as cursor:
        cursor.execute(
            sqlfiles.statement("hnsw.sql", "index_valid"),
            [sql.Identifier(index.name).as_string(None)],
        )
        found = cursor.fetchone()
    return IndexStatus.READY if found and found[0] else IndexStatus.MISSING


_endpoint: dict[str, Indexing] = {}
_endpoint_lock = threading.Lock()


def for_endpoint(using: str) -> Indexing:
    """The web process's Indexing for a database (builds run in a thread of their own)."""
    with _endpoint_lock:
        if using not in _endpoint:
            _endpoint[using] = Indexing(using, background=True)
        return _endpoint[using]


def wait_for_endpoint_builds(timeout: float | None = None) -> bool:
    """Wait for the index builds the endpoint started in this process; False on timeout."""
    with _endpoint_lock:
        indexings = list(_endpoint.values())
    deadline = None if timeout is None else time.monotonic() + timeout
    for indexing in indexings:
        with indexing._lock:
            threads = list(indexing._threads.values())
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
    return True
