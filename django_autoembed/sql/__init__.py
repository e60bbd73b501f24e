"""SQL kept in .sql files: load whole files or their named sections.

A section starts with a line ``-- name --`` and runs to the next such line.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_SECTION = re.compile(r"^-- ([a-z0-9_]+) --.*$", re.MULTILINE)


@cache
def load(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


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
    return sections(name)[key]
