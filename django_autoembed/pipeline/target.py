"""The declared configs as one database holds them: which config a message names, and each
config resolved once per batch (quoted names, column type, provider)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections
from psycopg import sql

from .. import providers, queue
from .. import sql as sqlfiles
from ..declarations import EmbeddingConfig, registry
from ..providers.base import Provider
from ..vectors import vector_type


@dataclass
class Resolved:
    """A config's names, column type and provider, looked up once for a batch."""

    config: EmbeddingConfig
    schema: str
    names: dict[str, sql.Composable]
    column_type: str
    provider: Provider

    def query(self, key: str) -> sql.Composed:
        """A section of ``processing.sql`` with this config's names filled in."""
        return sqlfiles.composed("processing.sql", key, **self.names)


def schema_of(cursor: Any, table: str) -> str | None:
    """The schema an unqualified table name resolves to (None: no such table)."""
    cursor.execute(
        sqlfiles.statement("processing.sql", "table_schema"),
        [sql.Identifier(table).as_string(None)],
    )
    row = cursor.fetchone()
    return row[0] if row else None


class Targets:
    """One database's view of the declared configs; remembers the schema of each table."""

    def __init__(self, using: str) -> None:
        self.using = using
        self._schemas: dict[str, str | None] = {}

    def match(self, target: queue.Target) -> tuple[EmbeddingConfig | None, str]:
        """The config a message's target names, or None and why: a job names its table,
        content function and column, and nothing else is ever touched."""
        config = registry.match(target.table, target.function, target.column)
        if config is None or self.schema_of(config) != target.schema:
            return None, (
                f"no declared embedding matches {target.schema}.{target.table} "
                f"(contentFunction {target.function!r}, embeddingColumn {target.column!r}); "
                "deploy the code that declares it, or delete the job"
            )
        return config, ""

    def schema_of(self, config: EmbeddingConfig) -> str | None:
        if config.table not in self._schemas:
            with connections[self.using].cursor() as cursor:
                self._schemas[config.table] = schema_of(cursor, config.table)
        return self._schemas[config.table]

    def resolve(self, config: EmbeddingConfig) -> Resolved:
        """The config's names for this database, its column type and its provider (which may
        raise ConfigurationError: a provider that cannot start)."""
        schema = self.schema_of(config) or "public"
        names: dict[str, sql.Composable] = {
            "table": sql.Identifier(schema, config.table),
            "pk": sql.Identifier(config.pk_column),
            "pktype": sql.SQL(config.model_class._meta.pk.rel_db_type(connections[self.using])),
            "fn": sql.Identifier(schema, config.function_name),
            "col": sql.Identifier(config.column),
            "vectype": sql.SQL(vector_type(config)),
        }
        if config.chunked:
            names.update(
                chunks=sql.Identifier(schema, config.chunk_table),
                ccol=sql.Identifier(config.column),
                cvectype=sql.SQL(vector_type(config)),
            )
        return Resolved(config, schema, names, vector_type(config), providers.for_config(config))
