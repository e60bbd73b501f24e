"""System checks that read the database (``manage.py check --database default``).

They compare what the declarations need with what the database holds:
extensions, the queue, each vector column, and each trigger and content
function, whose ``COMMENT ON`` carries the fingerprint of the declaration it
was created from.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.core import checks
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from psycopg import sql

from . import changes, grants, identity, queue
from . import sql as sqlfiles
from .declarations import EmbeddingConfig, registry
from .exceptions import ModelChanged
from .hnsw.deferral import IndexStatus, state_of
from .hnsw.indexes import managed_index
from .install import has_extension
from .triggers import EmbeddingTrigger, as_text

MIGRATE_HINT = "Run `python manage.py migrate`."
DRIFT_HINT = (
    "If every migration is applied, the object was changed in the database by hand: re-create it "
    "by "
    "migrating the model's app back one migration and forward again, or run the SQL that "
    "`python manage.py sqlmigrate <app> <migration>` prints for it."
)


_skipped: ContextVar[bool] = ContextVar("autoembed_dbchecks_skipped", default=False)


@contextmanager
def skipped() -> Iterator[None]:
    """No database checks inside this block (migrate runs them before it migrates)."""
    token = _skipped.set(True)
    try:
        yield
    finally:
        _skipped.reset(token)


def _query(key: str) -> str:
    return sqlfiles.statement("checks.sql", key)


def _scalar(cursor: Any, key: str, params: Any = None) -> Any:
    """The first value of checks.sql's query ``key`` (None without a row)."""
    cursor.execute(_query(key), params)
    row = cursor.fetchone()
    return row[0] if row else None


def _check_config(cursor: Any, config: EmbeddingConfig) -> list[checks.CheckMessage]:
    table = sql.Identifier(config.table).as_string(None)
    if not _scalar(cursor, "table_exists", [table]):
        return [
            checks.Error(
                f"{config.label}: table {config.table!r} does not exist.",
                hint=MIGRATE_HINT,
                obj=config.model_class,
                id="autoembed.E104",
            )
        ]
    vectors = config.vector_model._meta.db_table  # the chunk table, for a config in chunks
    cursor.execute(_query("column_type"), [sql.Identifier(vectors).as_string(None), config.column])
    column = cursor.fetchone()
    out = _column_errors(config, vectors, column)
    trigger = EmbeddingTrigger.for_config(config)  # what _bind declared on the model
    expected = trigger.fingerprint()
    out += _drift_errors(config, _trigger_objects(cursor, config, trigger, table), expected)
    if trigger.own_function:
        out += _check_search_path(cursor, config, table)
    if config.chunked and column is not None:
        out += _check_chunk_numbers(cursor, config)
    if column is not None:
        out += _check_index(cursor, config)
    if column is not None and column[1] == config.get_dimensions():  # else E105 says it
        out += _check_identity(cursor, config)
    return out


def _check_identity(cursor: Any, config: EmbeddingConfig) -> list[checks.CheckMessage]:
    """Stored vectors that another model made than the declared one (E111)."""
    try:
        identity.verify(cursor.db.alias, config)
    except ModelChanged as exc:
        problem, _, fix = str(exc).partition(" Nothing is embedded")
        return [
            checks.Error(
                problem,
                hint=f"Nothing is embedded{fix}" if fix else None,
                obj=config.model_class,
                id="autoembed.E111",
            )
        ]
    return []


def _column_errors(
    config: EmbeddingConfig, vectors: str, column: tuple[str, int] | None
) -> list[checks.CheckMessage]:
    """The vector column, (type, dimensions) as the catalog has it: missing (E107), or not
    what the declaration embeds (E105)."""
    if column is None:
        return [
            checks.Error(
                f"{config.label}: column {vectors}.{config.column} is missing.",
                hint=MIGRATE_HINT,
                obj=config.model_class,
                id="autoembed.E107",
            )
        ]
    if column[0] in ("vector", "halfvec") and column[1] == config.get_dimensions():
        return []
    shown = f"{column[0]}({column[1]})" if column[1] > 0 else column[0]
    return [
        checks.Error(
            f"{config.label}: column {vectors}.{config.column} is {shown}, but the "
            "declaration "
            f"embeds {config.get_dimensions()} dimensions.",
            hint="Create the migration for the change (`makemigrations`) and apply it; a "
            "column that still holds vectors cannot change its dimensions: see the how-to "
            "'Change the embedding model' in the docs (`autoembed_reembed` first).",
            obj=config.model_class,
            id="autoembed.E105",
        )
    ]


def _trigger_objects(
    cursor: Any, config: EmbeddingConfig, trigger: EmbeddingTrigger, table: str
) -> list[tuple[str, str | None, str | None]]:
    """(what, its comment, its enabled flag) of each trigger, and of the content function
    this app writes; enabled is None for an object that does not exist."""
    objects: list[tuple[str, str | None, str | None]] = []
    for name in trigger.trigger_names().values():
        cursor.execute(_query("trigger_state"), [table, name])
        row = cursor.fetchone()
        objects.append((f"trigger {name}", row[0] if row else None, row[1] if row else None))
    if not trigger.own_function:
        signature = f"{sql.Identifier(config.function_name).as_string(None)}({table})"
        cursor.execute(_query("function_state"), [signature, signature, signature])
        exists, comment, source = cursor.fetchone()
        body = as_text(sql.SQL(" select {} ").format(trigger.expression(config.model_class)))
        if exists and source != body:
            comment = None  # edited in place: CREATE OR REPLACE keeps the old comment
        objects.append((f"function {config.function_name}", comment, "O" if exists else None))
    return objects


def _drift_problem(comment: str | None, enabled: str | None, expected: str) -> str | None:
    """What is wrong with a trigger or function, or None when it is as declared."""
    if enabled is None:
        return "is missing"
    if enabled == "D":
        return "is disabled"
    if comment != expected:
        return "differs from the declaration"
    return None


def _drift_errors(
    config: EmbeddingConfig,
    objects: list[tuple[str, str | None, str | None]],
    expected: str,
) -> list[checks.CheckMessage]:
    """A trigger or content function missing, disabled, or not the declared one (E106)."""
    out: list[checks.CheckMessage] = []
    for what, comment, enabled in objects:
        problem = _drift_problem(comment, enabled, expected)
        if problem is None:
            continue
        out.append(
            checks.Error(
                f"{config.label}: {what} on {config.table} {problem}; rows will not be "
                "queued as declared.",
                hint=f"{MIGRATE_HINT} {DRIFT_HINT}",
                obj=config.model_class,
                id="autoembed.E106",
            )
        )
    return out


def _check_search_path(
    cursor: Any, config: EmbeddingConfig, table: str
) -> list[checks.CheckMessage]:
    """The user's own content function must set its search_path (E109)."""
    signature = f"{sql.Identifier(config.function_name).as_string(None)}({table})"
    cursor.execute(_query("function_search_path"), [signature])
    found = cursor.fetchone()
    if found is None or found[0]:
        return []
    return [
        checks.Error(
            f"{config.label}: content function {config.function_name} does not set its "
            "search_path. The update trigger runs it with search_path pg_catalog, pg_temp, "
            "so any name it does not qualify fails every UPDATE of the table.",
            hint="Add `SET search_path = <its schema>, pg_catalog` to "
            f"{config.function_name} (CREATE OR REPLACE FUNCTION ... SET search_path = "
            "...), naming only schemas "
            "untrusted roles cannot create objects in.",
            obj=config.model_class,
            id="autoembed.E109",
        )
    ]


def _check_index(cursor: Any, config: EmbeddingConfig) -> list[checks.CheckMessage]:
    """The HNSW index, missing with no worker rebuilding it (E108)."""
    # Deferred or building for a backfill is no drift: a worker builds it again.
    if state_of(cursor.db.alias, config) != IndexStatus.MISSING:
        return []
    index = managed_index(config)
    return [
        checks.Error(
            f"{config.label}: the HNSW index {index.name if index else ''} on "
            f"{config.table}.{config.column} is missing or invalid, and no worker is "
            "rebuilding it; searches scan every row.",
            hint=f"{MIGRATE_HINT} {DRIFT_HINT}",
            obj=config.model_class,
            id="autoembed.E108",
        )
    ]


def _check_chunk_numbers(cursor: Any, config: EmbeddingConfig) -> list[checks.CheckMessage]:
    """The chunk table's unique (parent, number): added in 0.2 to chunk models that exist."""
    cursor.execute(
        _query("has_unique_chunk_numbers"),
        [sql.Identifier(config.chunk_table).as_string(None)],
    )
    if cursor.fetchone()[0]:
        return []
    return [
        checks.Warning(
            f"{config.label}: the chunk table {config.chunk_table} has no unique "
            "(parent_id, number) constraint, the backstop against a chunk stored twice.",
            hint="Run `manage.py makemigrations` and `manage.py migrate`: the migration adds "
            "it, deleting any duplicates first.",
            obj=config.model_class,
            id="autoembed.W102",
        )
    ]


def _pending_summary(pending: list[str]) -> str:
    """Pending migrations by app: each app's own when few, else its first and last."""
    by_app: dict[str, list[str]] = {}
    for name in pending:
        app, _, migration = name.partition(".")
        by_app.setdefault(app, []).append(migration)
    parts: list[str] = []
    for app, names in by_app.items():
        if len(names) <= 2:
            parts.extend(f"{app}.{n}" for n in names)
        else:
            parts.append(f"{app}.{names[0]} to {names[-1]} ({len(names)} migrations)")
    return ", ".join(parts)


@checks.register(checks.Tags.database)
def check_database(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Runs only when asked (``check --database``), as Django does with database checks."""
    out: list[checks.CheckMessage] = []
    if _skipped.get():
        return out
    for alias in databases or []:
        if connections[alias].vendor != "postgresql":
            continue
        try:
            pending = _pending_migrations(alias)
            if pending:
                shown = _pending_summary(pending)
                out.append(
                    checks.Error(
                        f"Database {alias!r} lacks {len(pending)} "
                        f"migration{'s' if len(pending) > 1 else ''} that "
                        f"automatic embeddings need: {shown}.",
                        hint=f"Run `python manage.py migrate --database {alias}`.",
                        id="autoembed.E110",
                    )
                )
                continue
            changes.refresh(alias, 0)  # a model change: the live column and its shadow
            with connections[alias].cursor() as cursor:
                out.extend(_check_alias(cursor, alias, app_configs))
        except DatabaseError as exc:
            out.append(
                checks.Error(
                    f"Database {alias!r} could not be checked: {exc}",
                    hint="Check DATABASES and that the server is up.",
                    id="autoembed.E100",
                )
            )
    return out


def _pending_migrations(alias: str) -> list[str]:
    """Unapplied migrations of django_autoembed and of the apps that declare embeddings.

    A role that may not read django_migrations cannot tell; the grants warning says so.
    """
    with connections[alias].cursor() as cursor:
        if not _scalar(cursor, "can_read_migrations"):
            return []
    apps = {"django_autoembed"} | {
        c.model_class._meta.app_label for c in registry.on_database(alias)
    }
    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [
        f"{m.app_label}.{m.name}" for m, backwards in plan if not backwards and m.app_label in apps
    ]


def _check_alias(cursor: Any, alias: str, app_configs: Any) -> list[checks.CheckMessage]:
    if not has_extension(cursor, "vector"):
        return [
            checks.Error(
                f"pgvector is not installed in database {alias!r}.",
                hint=f"{MIGRATE_HINT} Its first migration creates the extension; that needs a role "
                "allowed to CREATE EXTENSION, and the pgvector package on the server.",
                id="autoembed.E101",
            )
        ]
    out: list[checks.CheckMessage] = []
    if not _scalar(cursor, "has_pgmq"):
        out.append(
            checks.Error(
                f"pgmq is not installed in database {alias!r}.",
                hint=f"{MIGRATE_HINT} django_autoembed's first migration installs it "
                "(as the extension where available, otherwise from the pgmq package's SQL).",
                id="autoembed.E102",
            )
        )
        return out
    lacks = grants.missing(alias)
    if "USAGE on schema pgmq" not in lacks and not queue.exists(cursor):
        out.append(
            checks.Error(
                f"The queue {queue.name()!r} does not exist in database {alias!r}.",
                hint="Run `python manage.py autoembed_sync` (migrate does it too).",
                id="autoembed.E103",
            )
        )
    for config in registry.on_database(alias):
        model = config.model_class
        if app_configs is None or model._meta.app_config in app_configs:
            out.extend(_check_config(cursor, config))
    if lacks:
        cursor.execute(_query("current_user"))
        role = cursor.fetchone()[0]
        out.append(
            checks.Warning(
                f"Role {role!r} on database {alias!r} cannot run process_embeddings, the endpoint "
                "or autoembed_status: "
                "it lacks "
                f"{', '.join(lacks[:6])}{f' and {len(lacks) - 6} more' if len(lacks) > 6 else ''}.",
                hint=f"As the owner of the tables, run `python manage.py autoembed_grants {role} "
                "--apply`. A role that "
                "only writes your tables needs none of this; silence the warning for it.",
                id="autoembed.W101",
            )
        )
    return out
