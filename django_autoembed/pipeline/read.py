"""Reading a batch: the rows its messages name, checked against the declarations, and the
text each row would embed now."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from django.core.exceptions import ValidationError
from django.db import transaction

from .. import db
from ..queue import Message
from .acks import Outcome, OutcomeKind, Row
from .target import Resolved, Targets


def expand(
    message: Message, targets: Targets, rows_for: Callable[[Message], Iterable[Any]] | None
) -> list[Row]:
    """The rows a message names (``rows_for``: only these of them; the others are skipped),
    each with its config, or failed with why not: a malformed job, a target nobody declared,
    a key that is not one of the table's."""
    if message.problem:
        return [Row(message, None, outcome=Outcome(OutcomeKind.FAILED, message.problem))]
    assert message.target is not None
    config, error = targets.match(message.target)
    wanted = None if rows_for is None else {str(i) for i in rows_for(message)}
    out = []
    for raw in message.row_ids:
        row = Row(message, raw, config=config)
        if wanted is not None and str(raw) not in wanted:
            row.outcome = Outcome(OutcomeKind.SKIPPED)
        elif config is None:
            row.outcome = Outcome(OutcomeKind.FAILED, error)
        else:
            try:
                row.pk = config.model_class._meta.pk.to_python(raw)
            except (ValidationError, ValueError, TypeError):
                row.outcome = Outcome(
                    OutcomeKind.FAILED, f"id {raw!r} is not a valid key for {config.table}"
                )
        out.append(row)
    return out


def read_texts(
    using: str, target: Resolved, pks: list[Any]
) -> tuple[dict[Any, str], dict[Any, str]]:
    """The text of each row (a deleted row is absent), and why it could not be had for the
    rows whose content function failed: one bad row must not stop its batch, it fails alone.
    A statement cancelled by a timeout is no row's fault: it is raised."""
    conn = db.raw(using)
    query = target.query("read_texts")
    try:
        with transaction.atomic(using=using), psycopg.Cursor(conn) as cur:
            cur.execute(query, [pks])
            return dict(cur.fetchall()), {}
    except psycopg.Error as exc:
        if db.cancelled(exc):
            raise
    contents: dict[Any, str] = {}
    broken: dict[Any, str] = {}
    for pk in pks:
        try:
            with transaction.atomic(using=using), psycopg.Cursor(conn) as cur:
                cur.execute(query, [[pk]])
                contents.update(cur.fetchall())
        except psycopg.Error as exc:
            if db.cancelled(exc):
                raise
            broken[pk] = (
                f"content function {target.config.function_name} failed for this row: "
                f"{str(exc).strip().splitlines()[0]}"
            )
    return contents, broken
