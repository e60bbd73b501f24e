"""The privileges a least-privilege role needs to run the worker, the endpoint and status.

Writing a declared table needs nothing but the grants on that table: the
trigger functions run as their owner. Processing needs more: the queue's
tables, this app's own tables, and SELECT/UPDATE on the declared tables.
``manage.py autoembed_grants ROLE`` prints (or applies) the statements; the
database checks report what the connected role lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import DatabaseError, connections, transaction
from psycopg import sql

from . import queue
from . import sql as sqlfiles
from .declarations import registry

# Per kind of object: the privilege test, and how a name becomes an oid (NULL when it does not
# exist).
_TESTS = {
    "schema": ("has_schema_privilege", "to_regnamespace"),
    "table": ("has_table_privilege", "to_regclass"),
    "function": ("has_function_privilege", "to_regprocedure"),
}


@dataclass(frozen=True)
class Privilege:
    """One privilege on one object: how to test for it and how to grant it."""

    kind: str  # "schema", "table" or "function"
    name: str  # as Postgres prints it: quoted where needed, schema-qualified
    privileges: tuple[str, ...]

    def missing_for(self, using: str, role: str) -> list[str]:
        """What ``role`` lacks of this; nothing for an object that does not exist (yet)."""
        test, resolve = _TESTS[self.kind]
        query = sqlfiles.statement(
            "grants.sql", "lacks", test=sql.Identifier(test), resolve=sql.Identifier(resolve)
        )
        out = []
        for privilege in self.privileges:
            try:
                with transaction.atomic(using=using), connections[using].cursor() as cursor:
                    cursor.execute(query, [self.name, role, self.name, privilege])
                    lacking = cursor.fetchone()[0] is False
            except (
                DatabaseError
            ):  # not even allowed to look the object up: its schema is out of reach
                lacking = True
            if lacking:
                out.append(f"{privilege} on {self.kind} {self.name}")
        return out

    def grant(self, role: str) -> str:
        """The GRANT statement (names here are ours or quoted already: no parameters)."""
        return sqlfiles.statement(
            "grants.sql",
            "grant",
            privileges=sql.SQL(", ".join(p.lower() for p in self.privileges)),
            kind=sql.SQL(self.kind),
            name=sql.SQL(self.name),
            role=sql.Identifier(role),
        )


QUEUE_IDS = "autoembed.queue_ids(jsonb[], text, text, text, text, text)"


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def needed(using: str = "default") -> list[Privilege]:
    """What the worker, the endpoint and ``autoembed_status`` need on database ``using``."""
    from .models import (
        EmbeddingChange,
        EmbeddingFailure,
        EmbeddingIdentity,
        EmbeddingUsage,
        Incident,
        IndexState,
        ProviderBatch,
        ProviderPause,
        RateBudget,
        StoredVector,
    )

    tables = queue.tables()
    out = [
        Privilege("schema", "pgmq", ("USAGE",)),
        Privilege(
            "table", tables["queue"].as_string(None), ("SELECT", "INSERT", "UPDATE", "DELETE")
        ),
        Privilege("table", tables["archive"].as_string(None), ("SELECT", "INSERT")),
        Privilege("table", "django_migrations", ("SELECT",)),
        # --backfill queues rows through it; it is not PUBLIC's (any role could queue work).
        Privilege("function", QUEUE_IDS, ("EXECUTE",)),
    ]
    for model in (
        EmbeddingFailure,
        IndexState,
        Incident,
        ProviderPause,
        EmbeddingUsage,
        RateBudget,
        StoredVector,
        ProviderBatch,
        EmbeddingIdentity,
        EmbeddingChange,
    ):
        out.append(
            Privilege(
                "table", _ident(model._meta.db_table), ("SELECT", "INSERT", "UPDATE", "DELETE")
            )
        )
    for config in registry.on_database(using):
        table = _ident(config.table)
        out.append(Privilege("table", table, ("SELECT", "UPDATE")))
        if config.chunked:
            out.append(
                Privilege(
                    "table", _ident(config.chunk_table), ("SELECT", "INSERT", "UPDATE", "DELETE")
                )
            )
        out.append(Privilege("function", f"{_ident(config.function_name)}({table})", ("EXECUTE",)))
    unique: dict[tuple[str, str], Privilege] = {}
    for privilege in out:
        key = (privilege.kind, privilege.name)
        earlier = unique.get(key)
        merged = (
            privilege.privileges
            if earlier is None
            else tuple(dict.fromkeys(earlier.privileges + privilege.privileges))
        )
        unique[key] = Privilege(privilege.kind, privilege.name, merged)
    return list(unique.values())


def statements(role: str, using: str = "default") -> list[str]:
    """GRANT statements that give ``role`` what processing needs."""
    return [p.grant(role) for p in needed(using)]


def missing(using: str = "default", role: str | None = None) -> list[str]:
    """Privileges ``role`` (default: the connected role) lacks, as 'PRIVILEGE on KIND NAME'."""
    if role is None:
        with connections[using].cursor() as cursor:
            cursor.execute(sqlfiles.statement("grants.sql", "current_role"))
            role = cursor.fetchone()[0]
    return [lack for privilege in needed(using) for lack in privilege.missing_for(using, role)]
