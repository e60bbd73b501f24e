"""Destinations: where a config's vectors go. One interface, two places: the vector column
of the row itself, or the chunk table (one vector per chunk of the row's text).

A destination says, once the batch has read its rows, which texts each row needs embedded
(``needs``) and which rows cannot be worked on (``problems``); then, in the transaction
that acknowledges the batch, it writes the vectors, only while each row still holds the
text they were made of, and only for the rows it could lock without waiting: a row an
application transaction holds is left for a quick retry, never waited for (waiting is how
a bulk_update and the worker deadlock).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import psycopg

from .. import changes, db
from ..chunking import ChunkPlan
from ..vectors import VectorArray, adapt
from .embed import Embedded
from .plan import chunk_plans, replan
from .target import Resolved

# (rows written, rows another transaction held, vectors stored)
Written = tuple[set[Any], set[Any], int]


class Destination(ABC):
    """Where one config's vectors are stored, for one batch."""

    # Put before a provider's error in a row's outcome.
    failure_prefix = ""

    def __init__(self, using: str, target: Resolved) -> None:
        self.using = using
        self.target = target
        self.needs: dict[Any, list[str]] = {}  # row key -> texts to embed for it
        self.problems: dict[Any, str] = {}  # row key -> why it cannot be worked on

    @abstractmethod
    def prepare(self, contents: dict[Any, str]) -> None:
        """Work out ``needs`` and ``problems`` for the rows read (their text by key)."""

    @abstractmethod
    def write(self, ready: list[Any], contents: dict[Any, str], embedded: Embedded) -> Written:
        """Store the ready rows' vectors, in the caller's transaction."""

    def _lock(self, cur: Any, pks: list[Any]) -> tuple[list[Any], set[Any]]:
        """(the rows locked now, the rows another transaction holds); deleted rows are neither."""
        cur.execute(self.target.query("lock_rows"), [pks])
        locked = [r[0] for r in cur.fetchall()]
        missing = set(pks) - set(locked)
        busy: set[Any] = set()
        if missing:
            cur.execute(self.target.query("existing_rows"), [list(missing)])
            busy = {r[0] for r in cur.fetchall()}
        return locked, busy

    def _cursor(self) -> psycopg.Cursor[Any]:
        # A server-side-binding cursor: vectors travel as binary, not as text literals.
        conn = db.raw(self.using)
        adapt(conn)
        return psycopg.Cursor(conn)


class VectorColumn(Destination):
    """One vector a row, in a column of the row (empty text: NULL)."""

    def prepare(self, contents: dict[Any, str]) -> None:
        self.needs = {pk: [text] if text else [] for pk, text in contents.items()}

    def write(self, ready: list[Any], contents: dict[Any, str], embedded: Embedded) -> Written:
        if not ready:
            return set(), set(), 0
        with self._cursor() as cur:
            locked, busy = self._lock(cur, ready)
            if not locked:
                return set(), busy, 0
            # Rows with a vector first, then those whose content is empty (NULL vector).
            with_vector = [pk for pk in locked if contents[pk]]
            order = with_vector + [pk for pk in locked if not contents[pk]]
            matrix = (
                np.stack([embedded.vector(contents[pk]) for pk in with_vector])
                if with_vector
                else np.empty((0, 0), np.float32)
            )
            cur.execute(
                self.target.query("write_vectors"),
                [
                    order,
                    [contents[pk] for pk in order],
                    VectorArray(matrix, len(order) - len(with_vector), self.target.column_type),
                ],
            )
            written = {r[0] for r in cur.fetchall()}
        return written, busy, len(written)


class ChunkTable(Destination):
    """One vector a chunk of the row's text, in the config's chunk table; only chunks whose
    text is new are embedded, the others keep their vectors (and move to their new place)."""

    failure_prefix = "a chunk failed: "

    def prepare(self, contents: dict[Any, str]) -> None:
        try:
            self.plans, unsplit = chunk_plans(self.using, self.target, contents)
        except psycopg.errors.UndefinedTable:
            if self.target.config.shadow_of is None:
                raise
            # A model change's new chunk table, renamed by a cutover since the jobs were read.
            changes.shadow_gone(self.using, self.target.config)
        self.needs = {pk: [t for _, t in plan.add] for pk, plan in self.plans.items()}
        # Its stored chunks stay as they are.
        self.problems = {pk: unsplit[t] for pk, t in contents.items() if t in unsplit}

    def write(self, ready: list[Any], contents: dict[Any, str], embedded: Embedded) -> Written:
        if not ready:
            return set(), set(), 0
        with self._cursor() as cur:
            locked, busy = self._lock(cur, ready)
            if not locked:
                return set(), busy, 0
            cur.execute(
                self.target.query("current_rows"), [locked, [contents[pk] for pk in locked]]
            )
            current = [r[0] for r in cur.fetchall()]  # the others changed: their text is queued
            # Planned again under the row locks, against what is stored now: another lane
            # may have written this text's chunks since they were read (they were stored
            # twice when two lanes met).
            plans, stale = replan(
                cur,
                self.target,
                current,
                self.plans,
                lambda text: embedded.vectors.get(text) is not None,
            )
            stored = self._replace(cur, plans, embedded)
        return set(plans), busy | stale, stored

    def _replace(self, cur: Any, plans: dict[Any, ChunkPlan], embedded: Embedded) -> int:
        """Drop, renumber and insert chunks by the plans; returns the chunks inserted."""
        query = self.target.query
        cur.execute(query("drop_chunks"), [[i for p in plans.values() for i in p.drop]])
        kept = [(i, n) for p in plans.values() for i, n in p.keep.items()]
        cur.execute(query("renumber_chunks"), [[i for i, _ in kept], [n for _, n in kept]])
        added = [(pk, n, t) for pk, plan in plans.items() for n, t in plan.add]
        if added:
            matrix = np.stack([embedded.vector(t) for _, _, t in added])
            cur.execute(
                query("insert_chunks"),
                [
                    [a[0] for a in added],
                    [a[1] for a in added],
                    [a[2] for a in added],
                    VectorArray(matrix, 0, self.target.column_type),
                ],
            )
        return len(added)


def destination(using: str, target: Resolved) -> Destination:
    """The destination of ``target``'s config."""
    return (ChunkTable if target.config.chunked else VectorColumn)(using, target)
