"""What ``autoembed_status`` reports: per config rows, vectors, queue, failures; the push path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import DatabaseError, ProgrammingError, connections, transaction
from psycopg import sql

from . import changes, identity, incidents, pauses, providers, queue, settings, usage
from . import sql as sqlfiles
from .batches import budget as batch_budget
from .batches import records as batch_records
from .declarations import EmbeddingConfig, registry
from .exceptions import QueueMissing
from .hnsw.deferral import state_of
from .push import JOB_NAME


@dataclass
class ConfigStatus:
    config: str
    table: str
    column: str
    rows: int
    embedded: int
    missing: int  # rows with a NULL vector (queued, failed, or empty text)
    queued_rows: int
    oldest_job_age_s: float | None
    failures: int
    # The HNSW index: "ready", "deferred" (dropped until the backlog drains), "building",
    # "missing", or None (no index of this app's on the column).
    index: str | None = None
    # For a config stored in chunks: how many chunks ("embedded" counts rows with chunks).
    chunks: int | None = None
    # Tokens sent to the provider today and in the last 30 days (UTC), and what the latter
    # cost by AUTOEMBED["PRICES"] (None: no price known for a model it used).
    tokens_today: int = 0
    tokens_30d: int = 0
    cost_30d_usd: float | None = None
    # Why its provider is paused (a configuration error or an outage), or None.
    paused: str | None = None
    # What made the stored vectors ("openai text-embedding-3-small (1536 dimensions)"), as
    # recorded with the first ones (None: none recorded yet).
    vectors_by: str | None = None
    # The declaration names another model than the one that made the stored vectors: why
    # nothing is embedded or searched for it, and the ways out (None: no change).
    model_changed: str | None = None
    # Whether rows, embedded and missing are estimates (a table of many rows is sampled,
    # not counted in full, unless asked for exact counts).
    estimated: bool = False
    # Why its rows could not be counted (this role may not read a table of it), or None.
    unreadable: str | None = None


@dataclass
class PushStatus:
    pg_cron: bool
    pg_net: bool
    job_active: bool
    schedule: str | None
    last_run_at: str | None
    last_run_status: str | None


@dataclass
class Status:
    queue: str
    queue_depth: int
    oldest_message_age_s: float | None
    # The oldest job a write queued (a backfill's wait their turn, or their batch): the lag.
    oldest_write_age_s: float | None = None
    batch_held_jobs: int = 0  # messages Batch API batches hold
    configs: list[ConfigStatus] = field(default_factory=list)
    push: PushStatus | None = None
    # Providers paused by a configuration error: {"provider", "error", "since", "last_seen"}.
    paused: list[dict[str, Any]] = field(default_factory=list)
    # Jobs still waiting in queues used before AUTOEMBED['QUEUE'] changed, by queue name.
    former_queues: dict[str, int] = field(default_factory=dict)
    # Batch API jobs in flight: {"config", "batch_id", "status", "inputs", "jobs", "submitted"}.
    batches: list[dict[str, Any]] = field(default_factory=list)
    batch_budgets: list[dict[str, Any]] = field(default_factory=list)
    # Rate budgets: {"provider", "tokens_per_minute", "requests_per_minute", "share", "throttled"}.
    budgets: list[dict[str, Any]] = field(default_factory=list)
    # Failures that repeat, seen lately: {"kind", "subject", "count", "error", ...}.
    incidents: list[dict[str, Any]] = field(default_factory=list)
    # Model changes under way: {"config", "from", "to", "phase", "done", "left", "tokens",
    # "cost_left_usd", "seconds_left", "automatic", "waiting"} (``changes.summary``).
    changes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _query(key: str, **names: sql.Composable) -> str:
    return sqlfiles.statement("status.sql", key, **names)


# Tables with fewer rows than this (as the planner last counted) are counted exactly; larger
# ones are estimated, so a monitoring probe never scans a table in full: rows as the planner
# counts them, the embedded share from the statistics ANALYZE keeps (it samples rows across
# the whole table), or, before any, from a sample of about SAMPLE_ROWS rows' pages.
EXACT_BELOW = 100_000
SAMPLE_ROWS = 20_000


def _config_status(cursor: Any, config: EmbeddingConfig, *, exact: bool = False) -> ConfigStatus:
    names = {
        "table": sql.Identifier(config.table),
        "column": sql.Identifier(config.column),
        "pk": sql.Identifier(config.pk_column),
    }
    if config.chunked:
        names["chunks"] = sql.Identifier(config.chunk_table)
    planned = _planned_rows(cursor, config.table)
    estimated = not exact and planned >= EXACT_BELOW
    chunks = None
    if estimated:
        rows = int(planned)
        share = _embedded_share(cursor, config, names, planned)
        embedded = round(rows * share)
        if config.chunked:
            chunks = int(_planned_rows(cursor, config.chunk_table))
    elif config.chunked:
        cursor.execute(_query("config_rows_chunked", **names))
        rows, embedded, chunks = cursor.fetchone()
    else:
        cursor.execute(_query("config_rows", **names))
        rows, embedded = cursor.fetchone()
    spent = usage.summary(cursor.db.alias, config.label)
    return ConfigStatus(
        config=config.label,
        table=config.table,
        column=config.queue_column,
        rows=rows,
        embedded=embedded,
        missing=rows - embedded,
        **_queued(cursor, config),
        index=state_of(cursor.db.alias, config) or changes.index_state(cursor.db.alias, config),
        chunks=chunks,
        tokens_today=spent.tokens_today,
        tokens_30d=spent.tokens_30d,
        cost_30d_usd=spent.cost_30d,
        estimated=estimated,
    )


def _queued(cursor: Any, config: EmbeddingConfig) -> dict[str, Any]:
    """A config's jobs waiting in the queue and its dead letters (the queue's tables and
    ours: readable where its own tables may not be)."""
    from .failures import EmbeddingFailure

    cursor.execute(
        _query("config_queued", queue=queue.tables()["queue"], queued_at=queue.queued_at()),
        [config.table, config.queue_column],
    )
    queued, oldest = cursor.fetchone()
    return {
        "queued_rows": int(queued),
        "oldest_job_age_s": None if oldest is None else float(oldest),
        "failures": EmbeddingFailure.objects.using(cursor.db.alias)
        .filter(config=config.label)
        .count(),
    }


def _embedded_share(
    cursor: Any, config: EmbeddingConfig, names: Mapping[str, sql.Composable], planned: float
) -> float:
    """The share of a large table's rows that hold a vector (or, in chunks, have chunks)."""
    if config.chunked:
        cursor.execute(_query("chunk_parents_planned"), [config.chunk_table])
        found = cursor.fetchone()
        if found and found[0] is not None:
            distinct = float(found[0])  # negative: a share of the chunk table's rows
            parents = (
                -distinct * _planned_rows(cursor, config.chunk_table) if distinct < 0 else distinct
            )
            return min(1.0, parents / planned)
    else:
        cursor.execute(_query("null_share_planned"), [config.table, config.column])
        found = cursor.fetchone()
        if found and found[0] is not None:
            return 1.0 - float(found[0])
    key = "config_sample_chunked" if config.chunked else "config_sample"
    cursor.execute(_query(key, **names), [min(100.0, 100.0 * SAMPLE_ROWS / planned)])
    sampled, with_vectors = cursor.fetchone()
    return with_vectors / sampled if sampled else 0.0


def _planned_rows(cursor: Any, table: str) -> float:
    """A table's rows as the planner last counted them (0 before the first ANALYZE)."""
    cursor.execute(_query("table_rows"), [sql.Identifier(table).as_string(None)])
    row = cursor.fetchone()
    return max(0.0, float(row[0] or 0)) if row else 0.0


def _push_status(cursor: Any) -> PushStatus:
    cursor.execute(_query("push_extensions"))
    present = {r[0] for r in cursor.fetchall()}
    status = PushStatus("pg_cron" in present, "pg_net" in present, False, None, None, None)
    if not status.pg_cron:
        return status
    cursor.execute(_query("push_job"), [JOB_NAME])
    job = cursor.fetchone()
    if job is None:
        return status
    status.job_active, status.schedule = bool(job[1]), job[2]
    cursor.execute(_query("push_last_run"), [job[0]])
    last = cursor.fetchone()
    if last:
        status.last_run_at = last[0].isoformat() if last[0] else None
        status.last_run_status = last[1]
    return status


def _former_queues(using: str) -> dict[str, int]:
    from .sync import former_queues

    try:  # autoembed.settings is the owner's; another role sees nothing here
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            out = {}
            for name in former_queues(cursor):
                if queue.exists(cursor, name):
                    cursor.execute(queue.query("depth", name))
                    count = int(cursor.fetchone()[0])
                    if count:
                        out[name] = count
            return out
    except DatabaseError:
        return {}


def collect(
    using: str = "default", configs: list[EmbeddingConfig] | None = None, *, exact: bool = False
) -> Status:
    """Read the numbers from the database (QueueMissing, a LookupError, when there is no queue).

    ``exact``: count every table in full, however large (by default a table of over
    ``EXACT_BELOW`` rows is estimated from a sample)."""
    name = queue.name()
    with connections[using].cursor() as cursor:
        if not queue.exists(cursor):
            raise QueueMissing(
                f"The queue {name!r} does not exist in database {using!r}. "
                "Run `python manage.py migrate` (or `manage.py autoembed_sync`)."
            )
        depth = queue.depth(cursor)
        status = Status(
            queue=name,
            queue_depth=depth.messages,
            oldest_message_age_s=depth.oldest,
            oldest_write_age_s=depth.oldest_write,
            batch_held_jobs=depth.held,
        )
        for config in configs if configs is not None else registry.on_database(using):
            status.configs.append(_counted(cursor, config, exact=exact))
        status.push = _push_status(cursor)
        status.former_queues = _former_queues(using)
    status.paused = pauses.as_dicts(pauses.current(using))
    by_provider = {p["provider"]: p["error"] for p in status.paused}
    for config_status in status.configs:
        config = registry.get(config_status.config)
        config_status.paused = by_provider.get(providers.pause_key(config)[:255])
        config_status.paused = (
            config_status.paused
            or by_provider.get(identity.pause_key(config)[:255])
            or by_provider.get(pauses.grants_key(config)[:255])
        )
        _identity_status(using, config, config_status)
    status.incidents = incidents.recent(using)
    status.changes = changes.summary(using, status.configs)
    status.batches = batch_records.status_rows(using)
    status.batch_budgets = batch_budget.status_rows(using, {b["model"] for b in status.batches})
    status.budgets = _budgets(using)
    return status


def _counted(cursor: Any, config: EmbeddingConfig, *, exact: bool) -> ConfigStatus:
    """A config's counts; one this role may not read (a grant missing) is shown as such, and
    the others are counted still (a monitoring probe runs as the application's role)."""
    try:
        with transaction.atomic(using=cursor.db.alias):  # a refusal ends no transaction
            return _config_status(cursor, config, exact=exact)
    except ProgrammingError as exc:
        refused = changes.privilege_refused(exc)
        if refused is None:
            raise
    said = refused.diag.message_primary or str(refused).strip()
    return ConfigStatus(
        config=config.label,
        table=config.table,
        column=config.queue_column,
        rows=0,
        embedded=0,
        missing=0,
        **_queued(cursor, config),
        unreadable=f"{said}: run `python manage.py autoembed_grants ROLE --apply` as the owner",
    )


def _identity_status(using: str, config: EmbeddingConfig, out: ConfigStatus) -> None:
    try:
        stored = identity.stored(using, config)
        out.vectors_by = str(stored) if stored else None
        out.model_changed = identity.refusal(using, config)
    except DatabaseError:  # not migrated, or not granted
        pass


def _budgets(using: str) -> list[dict[str, Any]]:
    from .budget import RateBudget

    tpm, rpm = settings.current().tokens_per_minute, settings.current().requests_per_minute
    try:
        return [
            {
                "provider": b.provider,
                "tokens_per_minute": tpm or b.learned_tpm or None,
                "requests_per_minute": rpm or b.learned_rpm or None,
                "share": round(b.factor, 3),
                "throttled": b.throttled,
            }
            for b in RateBudget.objects.using(using).order_by("provider")
        ]
    except DatabaseError:
        return []
