"""EmbeddingTrigger: a constraint whose SQL is the per-model triggers.

Django's autodetector diffs ``Meta.constraints`` for free, so declaring,
changing and removing an embedding becomes AddConstraint/RemoveConstraint
in ordinary migrations. ``CreateModel`` only calls ``constraint_sql`` inside
CREATE TABLE, so there the SQL is deferred until the table exists.
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.constraints import BaseConstraint
from psycopg import sql

from . import sql as sqlfiles
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .declarations import EmbeddingConfig

TEMPLATE = "model.sql"
# Bump when the rendered SQL changes shape, so drift checks notice old objects.
# 2: built-ins in content functions are qualified with pg_catalog.
SQL_VERSION = 2


def as_text(composable: sql.Composable) -> str:
    return composable.as_string(None)


class EmbeddingTrigger(BaseConstraint):
    """Content function and statement-level triggers for one embedding config.

    ``model`` and ``provider`` are the ones the declaration names (None: the settings'):
    they change no SQL, but ``makemigrations`` sees them change and writes the migration
    that moves the config to the new model beside its live vectors (``changes``).
    """

    non_db_attrs = (
        *BaseConstraint.non_db_attrs,
        "model",
        "provider",
        "chunk_tokens",
        "chunk_overlap",
    )

    def __init__(
        self,
        *,
        name: str,
        column: str,
        function: str,
        fields: list[str] | tuple[str, ...] = (),
        template: str | None = None,
        own_function: bool = False,
        clear_on_update: bool = False,
        chunk_table: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        violation_error_code: str | None = None,
        violation_error_message: str | None = None,
    ) -> None:
        super().__init__(
            name=name,
            violation_error_code=violation_error_code,
            violation_error_message=violation_error_message,
        )
        self.column = column
        self.function = function
        self.fields = list(fields)
        self.template = template
        self.own_function = own_function
        self.clear_on_update = clear_on_update
        # A config stored in chunks: the table whose rows die with the parent row.
        self.chunk_table = chunk_table
        self.model = model
        self.provider = provider
        # How a config in chunks splits its text (recorded so that a change of it is a
        # change of the vectors; None in triggers written before it was recorded).
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap

    @classmethod
    def for_config(cls, config: EmbeddingConfig) -> EmbeddingTrigger:
        from .declarations import short_name

        what = f"{config.config_name}_chunks" if config.chunked else config.column
        return cls(
            name=short_name("autoembed", config.table, what, limit=58),
            column=config.queue_column,
            function=config.function_name,
            fields=list(config.fields),
            template=config.template,
            own_function=not config.generates_function,
            clear_on_update=config.clear_on_update,
            chunk_table=config.chunk_table if config.chunked else None,
            model=config.model,
            provider=config.provider,
            chunk_tokens=config.chunk_tokens,
            chunk_overlap=config.chunk_overlap if config.chunked else None,
        )

    # -- Django constraint protocol ---------------------------------------

    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        path = "django_autoembed.triggers.EmbeddingTrigger"
        kwargs.update(column=self.column, function=self.function)
        if self.fields:
            kwargs["fields"] = self.fields
        if self.template is not None:
            kwargs["template"] = self.template
        if self.own_function:
            kwargs["own_function"] = True
        if self.clear_on_update:
            kwargs["clear_on_update"] = True
        if self.chunk_table:
            kwargs["chunk_table"] = self.chunk_table
        if self.model is not None:
            kwargs["model"] = self.model
        if self.provider is not None:
            kwargs["provider"] = self.provider
        if self.chunk_tokens is not None:
            kwargs["chunk_tokens"] = self.chunk_tokens
        if self.chunk_overlap is not None:
            kwargs["chunk_overlap"] = self.chunk_overlap
        return path, tuple(args), kwargs

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EmbeddingTrigger):
            return self.deconstruct() == other.deconstruct()
        return NotImplemented

    def makes_text(self) -> tuple[Any, ...]:
        """What decides the embedded text (a change of it is a change of the vectors)."""
        return (tuple(self.fields), self.template, self.function, self.own_function)

    def makes_same_text(self, other: EmbeddingTrigger) -> bool:
        """Whether ``other`` embeds the same text as this one, split into the same chunks (a
        trigger written before chunking was recorded is taken as the same)."""
        if self.makes_text() != other.makes_text():
            return False
        if self.chunk_tokens is None or other.chunk_tokens is None:
            return True
        return (self.chunk_tokens, self.chunk_overlap) == (other.chunk_tokens, other.chunk_overlap)

    def __repr__(self) -> str:
        return f"<EmbeddingTrigger {self.name}: {self.column} from {self.function}>"

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    def constraint_sql(self, model: type[models.Model] | None, schema_editor: Any) -> str:
        # Inside CREATE TABLE there is nothing to say; the triggers follow the table.
        schema_editor.deferred_sql.append(self.create_sql(model, schema_editor))
        return ""

    def create_sql(self, model: type[models.Model] | None, schema_editor: Any) -> str:
        assert model is not None
        return ";\n".join(self.statements(model)) + ";"

    def remove_sql(self, model: type[models.Model] | None, schema_editor: Any) -> str:
        assert model is not None
        return ";\n".join(self.drop_statements(model)) + ";"

    def validate(self, *args: Any, **kwargs: Any) -> None:
        return None

    # -- SQL ----------------------------------------------------------------

    def fingerprint(self, version: int = SQL_VERSION) -> str:
        _, _, kwargs = self.deconstruct()
        for name in ("model", "provider", "chunk_tokens", "chunk_overlap"):  # no SQL of theirs
            kwargs.pop(name, None)
        blob = json.dumps([version, kwargs], sort_keys=True)
        return "autoembed:" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def trigger_names(self) -> dict[str, str]:
        names = {"insert_trigger": f"{self.name}_ins", "update_trigger": f"{self.name}_upd"}
        if self.clear_on_update:
            names["clear_trigger"] = f"{self.name}_clr"
        if self.chunk_table:
            names["delete_trigger"] = f"{self.name}_del"
        return names

    def _names(self, model: type[models.Model]) -> dict[str, sql.Composable]:
        return {
            "table": sql.Identifier(model._meta.db_table),
            "function": sql.Identifier(self.function),
            "pk_arg": sql.Literal(model._meta.pk.column),
            "function_arg": sql.Literal(self.function),
            "column_arg": sql.Literal(self.column),
            "chunks_arg": sql.Literal(self.chunk_table or ""),
            "comment": sql.Literal(self.fingerprint()),
        }

    def expression(self, model: type[models.Model]) -> sql.Composable:
        """The SQL expression over row ``r`` that yields the embedded text."""
        meta = model._meta

        def column(field_name: str) -> sql.Composable:
            try:
                f = meta.get_field(field_name)
            except Exception:
                names = sorted(f.name for f in meta.concrete_fields)
                raise ConfigurationError(
                    f"{meta.label} embeds {field_name!r}, which is not a field. "
                    f"Choose from: {', '.join(names)}."
                ) from None
            if not isinstance(f, models.Field) or not f.column:
                raise ConfigurationError(
                    f"{meta.label} embeds {field_name!r}, which has no column of its own."
                )
            return sql.SQL("r.{}").format(sql.Identifier(f.column))

        if self.template is not None:
            parts: list[sql.Composable] = []
            for literal, field_name, spec, conversion in string.Formatter().parse(self.template):
                if literal:
                    parts.append(sql.Literal(literal))
                if field_name is not None:
                    if spec or conversion:
                        raise ConfigurationError(
                            f"{meta.label}: template field {{{field_name}}} uses a format spec or "
                            "conversion, which SQL cannot render. Use plain {field} placeholders."
                        )
                    parts.append(column(field_name))
            if not parts:
                return sql.SQL("''::text")
            return sql.SQL("pg_catalog.concat({})").format(sql.SQL(", ").join(parts))
        # Qualified: a function called concat_ws earlier on a caller's search path must
        # not get to decide what is embedded.
        cols = [sql.SQL("nullif({}::pg_catalog.text, '')").format(column(f)) for f in self.fields]
        return sql.SQL("pg_catalog.concat_ws(E'\\n\\n', {})").format(sql.SQL(", ").join(cols))

    def statements(self, model: type[models.Model]) -> list[str]:
        sec = sqlfiles.sections(TEMPLATE)
        names = self._names(model)
        out: list[str] = []
        if not self.own_function:
            out.append(
                as_text(
                    sql.SQL(sec["content_function"]).format(
                        expression=self.expression(model), **names
                    )
                )
            )
            out.append(as_text(sql.SQL(sec["comment_function"]).format(**names)))
        for key, trigger in self.trigger_names().items():
            ident = sql.Identifier(trigger)
            out.append(as_text(sql.SQL(sec[key]).format(**{key: ident}, **names)))
            out.append(as_text(sql.SQL(sec["comment_trigger"]).format(trigger=ident, **names)))
        return out

    def drop_statements(self, model: type[models.Model]) -> list[str]:
        sec = sqlfiles.sections(TEMPLATE)
        names = self._names(model)
        out = [
            as_text(sql.SQL(sec["drop_trigger"]).format(trigger=sql.Identifier(t), **names))
            for t in self.trigger_names().values()
        ]
        if not self.own_function:
            out.append(as_text(sql.SQL(sec["drop_function"]).format(**names)))
        return out
