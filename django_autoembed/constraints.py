"""The chunk table's backstop: one chunk per (parent, number)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from psycopg import sql

from . import sql as sqlfiles


class UniqueChunkNumbers(models.UniqueConstraint):
    """``unique (parent_id, number)``, checked at the end of each statement (``DEFERRABLE
    INITIALLY IMMEDIATE``): renumbering the chunks a text kept moves numbers past one another
    within one UPDATE.

    The worker plans every chunk write under its parent row's lock, so two lanes cannot store
    a chunk twice; this constraint makes sure of it. Added to a table that holds duplicates
    (a release before 0.2 could store them when two lanes met), it first deletes them,
    keeping the first one stored of each number.
    """

    def __init__(self, *, name: str, **kwargs: Any) -> None:
        kwargs.setdefault("fields", ("parent", "number"))
        kwargs.setdefault("deferrable", models.Deferrable.IMMEDIATE)
        super().__init__(name=name, **kwargs)

    def constraint_sql(self, model: Any, schema_editor: Any) -> Any:
        try:
            return super().constraint_sql(model, schema_editor)
        except FieldDoesNotExist:
            # A reversed DeleteModel makes the table before it adds back the foreign key the
            # autodetector removed first; the database checks (W102) report the gap.
            return None

    def remove_sql(self, model: Any, schema_editor: Any) -> Any:
        # IF EXISTS: the table a reversed DeleteModel made may lack it (see constraint_sql).
        return sqlfiles.statement(
            "model.sql",
            "drop_unique_chunk_numbers",
            table=sql.Identifier(model._meta.db_table),
            name=sql.Identifier(self.name),
        )

    def create_sql(self, model: Any, schema_editor: Any) -> Any:
        statement = super().create_sql(model, schema_editor)
        try:
            parent, number = (model._meta.get_field(f).column for f in ("parent", "number"))
        except FieldDoesNotExist:  # a model state being rebuilt by a reversed migration
            return statement
        dedupe = sqlfiles.statement(
            "model.sql",
            "dedupe_chunks",
            table=sql.Identifier(model._meta.db_table),
            parent=sql.Identifier(parent),
            number=sql.Identifier(number),
            pk=sql.Identifier(model._meta.pk.column),
        )
        return f"{dedupe}; {statement}"
