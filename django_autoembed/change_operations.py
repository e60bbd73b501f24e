"""The migration operations of a model change (``changes``), written by ``makemigrations``.

``ChangeEmbedding`` replaces what Django would write for a config whose model, provider,
dimensions or text changed (a constraint swapped or altered, the vector column altered).
Applied where the config stores no vector, it does just that. Where vectors are stored,
it adds the shadow column beside the live one and records the change; the live column
keeps its type and vectors until the cutover.

``ChangeMarker`` is a field with no column that the change leaves in the migration state,
so that a later ``makemigrations`` writes ``FinishEmbeddingChange``, which drops the old
vectors once the change is cut over.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models, transaction
from django.db.migrations.operations.base import Operation, OperationCategory
from psycopg import sql

from . import changes, identity, queue, settings
from . import sql as sqlfiles
from .declarations import EmbeddingConfig, registry, short_name
from .exceptions import ConfigurationError
from .triggers import EmbeddingTrigger


class ChangeMarker(models.Field):  # type: ignore[type-arg]
    """A change of ``column``'s vectors, kept in the migration state until dropped."""

    def __init__(self, *args: Any, column: str = "", **kwargs: Any) -> None:
        self.change_column = column
        kwargs.update(editable=False, null=True)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, _, args, kwargs = super().deconstruct()
        kwargs.pop("editable", None)
        kwargs.pop("null", None)
        kwargs["column"] = self.change_column
        return name, "django_autoembed.change_operations.ChangeMarker", args, kwargs

    def get_attname_column(self) -> tuple[str, None]:
        return self.get_attname(), None

    def db_type(self, connection: Any) -> None:
        return None


def marker_name(column: str) -> str:
    return short_name("autoembed_change", column).strip("_").replace("__", "_")


def shadow_trigger(trigger: EmbeddingTrigger, table: str, config_name: str) -> EmbeddingTrigger:
    """The triggers that queue the shadow's jobs: the new text, named for the shadow (as
    ``EmbeddingTrigger.for_config`` names them for the shadow config)."""
    chunks = None
    if trigger.chunk_table:  # a new chunk table, named for the shadow config
        name = changes.shadow_name(config_name)
        chunks = short_name(table, name, "chunks")
        column = f"{chunks}.{trigger.column.rpartition('.')[2]}"
        what, function = f"{name}_chunks", short_name(table, name, "chunks", "input")
    else:
        column = changes.shadow_column(trigger.column)
        what, function = column, short_name(table, column, "input")
    return EmbeddingTrigger(
        name=short_name("autoembed", table, what, limit=58),
        column=column,
        function=trigger.function if trigger.own_function else function,
        fields=trigger.fields,
        template=trigger.template,
        own_function=trigger.own_function,
        clear_on_update=trigger.clear_on_update,
        chunk_table=chunks,
    )


class ChangeEmbedding(Operation):
    """Move a config to another model, provider, dimensions or text (see the module)."""

    category = OperationCategory.ALTERATION
    reversible = True
    reduces_to_sql = False

    def __init__(
        self,
        model_name: str,
        constraint: EmbeddingTrigger,
        field: Any | None = None,
    ) -> None:
        self.model_name = model_name
        self.constraint = constraint
        # The vector field's new field, on the chunk model for chunks (None: unchanged).
        self.field = field

    @property
    def vector_field(self) -> str:
        """The vector field's name (on the chunk model, for chunks)."""
        return self.constraint.column.rpartition(".")[2]

    def _holder(self, state: Any, app_label: str) -> str:
        """The model whose table holds the vectors: the chunk model, for chunks."""
        table = self.constraint.chunk_table
        for (label, name), model_state in state.models.items() if table else ():
            if label == app_label and model_state.options.get("db_table") == table:
                return str(name)
        return self.model_name_lower

    def _vector_model(self, state: Any, app_label: str) -> Any:
        return state.apps.get_model(app_label, self._holder(state, app_label))

    @property
    def model_name_lower(self) -> str:
        return self.model_name.lower()

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs: dict[str, Any] = {"model_name": self.model_name, "constraint": self.constraint}
        if self.field is not None:
            kwargs["field"] = self.field
        return self.__class__.__name__, [], kwargs

    def describe(self) -> str:
        if self.constraint.chunk_table:
            chunks = self.constraint.column.partition(".")[0]
            return f"Change the embedding of {self.model_name}'s chunks ({chunks})"
        return f"Change the embedding of {self.model_name}.{self.constraint.column}"

    @property
    def migration_name_fragment(self) -> str:
        what = "chunks" if self.constraint.chunk_table else self.constraint.column
        return f"change_{self.model_name_lower}_{what}"

    def state_forwards(self, app_label: str, state: Any) -> None:
        model_state = state.models[app_label, self.model_name_lower]
        if any(c.name == self.constraint.name for c in model_state.options["constraints"]):
            state.remove_constraint(app_label, self.model_name_lower, self.constraint.name)
        state.add_constraint(app_label, self.model_name_lower, self.constraint)
        column = self.constraint.column
        if self.field is not None:
            holder = self._holder(state, app_label)
            state.alter_field(app_label, holder, self.vector_field, self.field, True)
        name = marker_name(column)
        marker = ChangeMarker(column=column)
        if name in model_state.fields:
            state.alter_field(app_label, self.model_name_lower, name, marker, True)
        else:
            state.add_field(app_label, self.model_name_lower, name, marker, True)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        old_model = from_state.apps.get_model(app_label, self.model_name)
        model = to_state.apps.get_model(app_label, self.model_name)
        using = schema_editor.connection.alias
        if not self.allow_migrate_model(using, model):
            return
        old = _constraint(from_state, app_label, self.model_name_lower, self.constraint.name)
        config = _config(model, self.constraint)
        if config is None or not _shadowed(using, config, old, self.constraint):
            _swap(schema_editor, old_model, old, model, self.constraint)
            self._alter(schema_editor, from_state, to_state, app_label)
            return
        # Live edits are embedded from the new text, by the old model, until the cutover.
        _swap(schema_editor, old_model, old, model, self.constraint)
        vectors = self._vector_model(to_state, app_label)
        _begin(using, schema_editor, model, vectors, config, self.constraint)

    def _alter(self, schema_editor: Any, from_state: Any, to_state: Any, app_label: str) -> None:
        """What Django would have done to the vector field: no vector is stored to keep."""
        if self.field is None:
            return
        old = self._vector_model(from_state, app_label)
        new = self._vector_model(to_state, app_label)
        name = self.vector_field
        schema_editor.alter_field(new, old._meta.get_field(name), new._meta.get_field(name))

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        # from_state: with this change; to_state: before it.
        model = from_state.apps.get_model(app_label, self.model_name)
        old_model = to_state.apps.get_model(app_label, self.model_name)
        using = schema_editor.connection.alias
        if not self.allow_migrate_model(using, model):
            return
        old = _constraint(to_state, app_label, self.model_name_lower, self.constraint.name)
        change = _recorded(using, model._meta.db_table, self.constraint.column)
        if change is not None:
            _abandon(using, schema_editor, model, change, self.constraint)
            _swap(schema_editor, model, self.constraint, old_model, old)
            return
        _swap(schema_editor, model, self.constraint, old_model, old)
        self._alter(schema_editor, from_state, to_state, app_label)


class FinishEmbeddingChange(Operation):
    """Drop the old vectors of a change once it is cut over (at the cutover if not yet)."""

    category = OperationCategory.REMOVAL
    reversible = True
    reduces_to_sql = False

    def __init__(self, model_name: str, name: str) -> None:
        self.model_name = model_name
        self.name = name

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__name__, [], {"model_name": self.model_name, "name": self.name}

    def describe(self) -> str:
        return f"Drop the old vectors of {self.model_name}'s embedding change"

    @property
    def migration_name_fragment(self) -> str:
        return f"finish_{self.model_name.lower()}_{self.name}"

    def state_forwards(self, app_label: str, state: Any) -> None:
        state.remove_field(app_label, self.model_name.lower(), self.name)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        using = schema_editor.connection.alias
        if not self.allow_migrate_model(using, model):
            return
        column = model._meta.get_field(self.name).change_column
        table = model._meta.db_table
        change = _recorded(using, table, column)
        if change is None:
            return
        names = _names(table, change)
        with schema_editor.connection.cursor() as cursor:
            if change.cut_over is not None:
                drop = changes.drop_previous_key(change)
                cursor.execute(sqlfiles.statement("changes.sql", drop, **names))
                cursor.execute(
                    sqlfiles.statement("changes.sql", "forget_change", **names), [change.config]
                )
            else:  # dropped by the cutover, in its transaction
                changes.EmbeddingChange.objects.using(using).filter(pk=change.config).update(
                    drop=True
                )

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        return None  # the old vectors are gone (or go at the cutover): nothing to restore


# -- the steps -------------------------------------------------------------------------


def _swap(
    schema_editor: Any,
    from_model: Any,
    current: EmbeddingTrigger | None,
    to_model: Any,
    wanted: EmbeddingTrigger | None,
) -> None:
    """Replace the triggers ``current`` made by ``wanted``'s, if their SQL differs."""
    unchanged = (
        current is not None
        and wanted is not None
        and current.create_sql(from_model, None) == wanted.create_sql(to_model, None)
    )
    if unchanged:
        return
    if current is not None:
        schema_editor.remove_constraint(from_model, current)
    if wanted is not None:
        schema_editor.add_constraint(to_model, wanted)


def _constraint(state: Any, app_label: str, model_name: str, name: str) -> Any:
    model_state = state.models[app_label, model_name]
    for constraint in model_state.options.get("constraints", []):
        if constraint.name == name:
            return constraint
    return None


def _config(model: Any, trigger: EmbeddingTrigger) -> EmbeddingConfig | None:
    """The declared config the trigger is made for (None: this code no longer declares it)."""
    for config in registry.declared():
        if (config.table, config.queue_column) == (model._meta.db_table, trigger.column):
            return config
    return None


def _shadowed(
    using: str, config: EmbeddingConfig, old: EmbeddingTrigger | None, new: EmbeddingTrigger
) -> bool:
    """Whether the change needs a shadow: vectors are stored, and the text or the model that
    makes them changes."""
    if not identity.has_vectors(using, config):
        return False
    stored = identity.stored(using, config)
    text_changed = old is not None and not old.makes_same_text(new)
    return text_changed or (stored is not None and stored != identity.declared(config))


def _names(table: str, change: Any) -> dict[str, sql.Composable]:
    return {
        **changes._tables(),
        "table": sql.Identifier(table),
        "previous": sql.Identifier(changes.previous_of(change.column)),
    }


def _recorded(using: str, table: str, column: str) -> Any:
    return changes.EmbeddingChange.objects.using(using).filter(table=table, column=column).first()


def _begin(
    using: str,
    schema_editor: Any,
    model: Any,
    vectors: Any,
    config: EmbeddingConfig,
    new: EmbeddingTrigger,
) -> None:
    """Add the shadow (a column, or a chunk table for chunks) and its triggers, and record
    the change. ``vectors``: the model whose table holds the vectors (the chunk model)."""
    table = model._meta.db_table
    shadow_trig = shadow_trigger(new, table, config.config_name)
    shadow = shadow_trig.chunk_table or changes.shadow_column(config.column)
    connection = connections[using]
    previous = (
        changes.previous_table(config.chunk_table)
        if config.chunked
        else changes.previous_column(config.column)
    )
    with connection.cursor() as cursor:
        if _exists(cursor, config, table, shadow):
            what = "a table" if config.chunked else "the table already has a column"
            raise ConfigurationError(
                f"{config.label}: {what} {shadow!r} exists, which a model change needs for the "
                "new vectors: a change is under way (`python manage.py autoembed_status`), or "
                "one of yours has that name. Restore the declaration this change began from, "
                "let the change under way finish (`python manage.py autoembed_cutover "
                f"{config.label} --wait 600`) and apply its drop migration, then declare the "
                "new change again; or rename yours."
            )
        if _exists(cursor, config, table, previous):
            raise ConfigurationError(
                f"{config.label}: the old vectors of its last model change are still in "
                f"{previous!r}, where this change's cutover would keep the live ones. Restore "
                "the declaration, write and apply the drop migration on its own (`python "
                "manage.py makemigrations` then `migrate`), then declare this change again."
            )
    wanted = identity.declared(config)
    stored = identity.stored(using, config) or wanted
    field = vectors._meta.get_field(config.column)
    index = _live_index(vectors, config.column)
    vector_type = sql.SQL(field.db_type(connection))
    if config.chunked:
        for statement_text in _chunk_table(vectors, shadow, model, vector_type, config.column):
            schema_editor.execute(statement_text, None)
    else:
        schema_editor.execute(
            sql.SQL("alter table {} add column {} {}")
            .format(sql.Identifier(table), sql.Identifier(shadow), vector_type)
            .as_string(None),
            None,
        )
    # Its index is built in bulk once every row has its vector (changes.build_index).
    options = (
        {
            "opclass": (index.opclasses or ["halfvec_cosine_ops"])[0],
            "m": int(getattr(index, "m", None) or 16),
            "ef_construction": int(getattr(index, "ef_construction", None) or 64),
        }
        if index is not None
        else {}
    )
    for statement_text in shadow_trig.statements(model):
        schema_editor.execute(statement_text, None)
    changes.EmbeddingChange.objects.using(using).update_or_create(
        config=config.label,
        defaults={
            "table": table,
            "column": config.queue_column,
            "shadow": shadow_trig.column,
            "index": index.name if index is not None else "",
            "index_options": options,
            "old_provider": stored.provider,
            "old_model": stored.model,
            "old_dimensions": stored.dimensions,
            "provider": wanted.provider,
            "model": wanted.model,
            "dimensions": wanted.dimensions,
            "queued": None,
            "switched": None,
            "cut_over": None,
            "drop": False,
            "automatic": settings.current().change_automatic_cutover,
        },
    )
    identity.forget(using, config)
    # After the commit: the migration holds the table's lock until then, and queueing every
    # row (or estimating their cost) inside it would block the application that long.
    label = config.label
    transaction.on_commit(lambda: changes.begin(using, label), using=using)


def _exists(cursor: Any, config: EmbeddingConfig, table: str, name: str) -> bool:
    """Whether the table (for chunks) or ``table``'s column ``name`` exists."""
    if config.chunked:
        cursor.execute(
            sqlfiles.statement("changes.sql", "has_table"), [sql.Identifier(name).as_string(None)]
        )
    else:
        cursor.execute(
            sqlfiles.statement("changes.sql", "has_column"),
            [sql.Identifier(table).as_string(None), name],
        )
    return bool(cursor.fetchone()[0])


def _chunk_table(
    chunks: Any, name: str, model: Any, vector_type: sql.Composable, column: str
) -> list[str]:
    """A new chunk table ``name`` shaped as the chunk model's (its keys named for it, as the
    cutover names them for the live one), empty, with the new vectors' type and no index on
    them yet."""
    ident = sql.Identifier
    names = {
        "live": ident(chunks._meta.db_table),
        "next": ident(name),
        "table": ident(model._meta.db_table),
        "pk": ident(model._meta.pk.column),
        "id": ident(chunks._meta.pk.column),
        "pkey": ident(short_name(name, "pkey")),
        "uniq": ident(changes.unique_chunks_name(name)),
        "fk": ident(short_name(name, "parent_id", "fk")),
        "col": ident(column),
        "type": vector_type,
    }
    statement = sqlfiles.statement
    return [
        statement("changes.sql", "create_chunks", **names),
        statement("changes.sql", "alter_type", **names),
        statement("changes.sql", "chunk_keys", **names),
        statement(
            "changes.sql", "chunk_parent_index", name=ident(short_name(name, "parent")), **names
        ),
    ]


def _live_index(model: Any, column: str) -> Any:
    for index in model._meta.indexes:
        if list(index.fields) == [column] and getattr(index, "m", None) is not None:
            return index
    return None


def _abandon(
    using: str, schema_editor: Any, model: Any, change: Any, trigger: EmbeddingTrigger
) -> None:
    if change.cut_over is not None:
        raise ConfigurationError(
            f"{change.config}: the change to {change.model} was cut over at "
            f"{change.cut_over:%Y-%m-%d %H:%M}; it cannot be reversed by a migration. Its old "
            f"vectors are in {changes.previous_of(change.column)!r} until the drop migration "
            "runs."
        )
    table = model._meta.db_table
    config_name = change.config.rpartition(".")[2]
    shadow = shadow_trigger(trigger, table, config_name)
    for statement_text in shadow.drop_statements(model):
        schema_editor.execute(statement_text, None)
    with schema_editor.connection.cursor() as cursor:  # its jobs have nothing to write now
        cursor.execute(
            sqlfiles.statement("changes.sql", "forget_jobs", queue=queue.tables()["queue"]),
            [table, change.shadow],
        )
    if shadow.chunk_table:
        drop = sqlfiles.statement(
            "changes.sql", "drop_chunks", next=sql.Identifier(shadow.chunk_table)
        )
    else:
        drop = (
            sql.SQL("alter table {} drop column if exists {}")
            .format(sql.Identifier(table), sql.Identifier(change.shadow))
            .as_string(None)
        )
    schema_editor.execute(drop, None)
    from .identity import EmbeddingIdentity

    EmbeddingIdentity.objects.using(using).filter(
        config=changes.shadow_label(change.config)
    ).delete()
    change.delete(using=using)
