"""SQL kept in .sql files: whole files (migrations) or named sections (runtime queries).

A section starts with a line ``-- name --`` (a purpose may follow) and runs to the next
such line. Runtime queries live in files by owner (``status.sql``, ``hnsw.sql``...);
migrations' SQL lives in ``migrations/``, frozen once released. Placeholders in braces
are identifiers, filled by psycopg.sql (quoted); values are always query parameters.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from psycopg import sql

_SECTION = re.compile(r"^-- ([a-z0-9_]+) --.*$", re.MULTILINE)


@cache
def load(name: str) -> str:
    """A whole file, by its path under this package (``migrations/0001_schema.sql``)."""
    resource = files(__package__)
    for part in name.split("/"):
        resource = resource.joinpath(part)
    return resource.read_text(encoding="utf-8")


@cache
def sections(name: str) -> dict[str, str]:
    text = load(name)
    marks = list(_SECTION.finditer(text))
    out: dict[str, str] = {}
    for mark, nxt in zip(marks, [*marks[1:], None], strict=False):
        end = nxt.start() if nxt else len(text)
        out[mark.group(1)] = text[mark.end() : end].strip()
    return out


def section(name: str, key: str) -> str:
    """A section's text as written (no names to fill)."""
    return sections(name)[key]


def composed(file: str, key: str, /, **names: sql.Composable) -> sql.Composed:
    """A section with its ``{names}`` filled in (for psycopg's own cursors)."""
    return sql.SQL(section(file, key)).format(**names)


def statement(file: str, key: str, /, **names: sql.Composable) -> str:
    """A section with its ``{names}`` filled in, as the string a cursor executes (a section
    used without names is taken as written: its braces may be literals, as ``'{}'``)."""
    if not names:
        return section(file, key)
    return composed(file, key, **names).as_string(None)
