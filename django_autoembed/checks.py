"""System checks: declarations that cannot work, settings that are off."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.core import checks
from django.db import DEFAULT_DB_ALIAS, models, router
from pgvector.django import HalfVectorField, VectorField

from . import settings as autoembed_settings
from .declarations import HNSW_MAX_DIMENSIONS, EmbeddingConfig, registry
from .exceptions import ConfigurationError

NOT_EMBEDDABLE = (models.BinaryField, HalfVectorField, VectorField, models.FileField)


@checks.register("autoembed")
def check_declarations(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    columns: dict[tuple[str, str], str] = {}  # (table, queue column) -> the config writing it
    for config in registry.declared():
        meta = config.model_class._meta
        if app_configs is not None and meta.app_config not in app_configs:
            continue
        errors.extend(_config_errors(config))
        key = (meta.db_table, config.queue_column)
        if key in columns:
            errors.append(_shared_column(config, columns[key]))
        columns[key] = config.label
        errors.extend(_check_routing(config))
    return errors


def _config_errors(config: EmbeddingConfig) -> list[checks.CheckMessage]:
    """Everything wrong with one declaration on its own, in the order the ids were added."""
    meta = config.model_class._meta
    local = {f.name: f for f in meta.local_concrete_fields}
    errors = _field_errors(config, local)
    column = (
        None
        if config.chunked
        else local.get(config.column)
        or next((f for f in meta.local_fields if f.column == config.column), None)
    )
    if column is not None:
        errors.extend(_column_errors(config, column))
    for check in _OPTION_CHECKS:
        error = check(config)
        if error is not None:
            errors.append(error)
    return errors


def _field_errors(config: EmbeddingConfig, local: dict[str, Any]) -> list[checks.CheckMessage]:
    """Fields embedded that are not text of this table (E001, E002), or none at all (E003)."""
    model = config.model_class
    errors: list[checks.CheckMessage] = []
    for name in config.template_fields():
        field = local.get(name)
        if field is None:
            inherited = name in {f.name for f in model._meta.concrete_fields}
            errors.append(
                checks.Error(
                    f"{config.label} embeds {name!r}, which is "
                    + ("a field of a parent model's table." if inherited else "not a field."),
                    hint="Embed fields stored in this model's own table. Choose from: "
                    + ", ".join(sorted(local))
                    + ".",
                    obj=model,
                    id="autoembed.E001",
                )
            )
        elif isinstance(field, NOT_EMBEDDABLE):
            errors.append(
                checks.Error(
                    f"{config.label} embeds {name!r}, a {type(field).__name__}, which has no "
                    "text to embed.",
                    hint="Embed text, number or date fields, or write a content_function.",
                    obj=model,
                    id="autoembed.E002",
                )
            )
    if not config.template_fields() and not config.content_function:
        errors.append(
            checks.Error(
                f"{config.label} has no fields, template or content_function.",
                hint="Give EmbeddingConfig(fields=[...]) or template='...'.",
                obj=model,
                id="autoembed.E003",
            )
        )
    return errors


def _column_errors(config: EmbeddingConfig, column: Any) -> list[checks.CheckMessage]:
    """A model field already at ``column=`` that is no vector (E004) or of other dimensions
    (E005)."""
    errors: list[checks.CheckMessage] = []
    if not isinstance(column, (HalfVectorField, VectorField)):
        errors.append(
            checks.Error(
                f"{config.label} writes to {config.column!r}, a {type(column).__name__}, not "
                "a vector column.",
                hint="Point column= at a HalfVectorField/VectorField, or at a free name to "
                "have one added.",
                obj=config.model_class,
                id="autoembed.E004",
            )
        )
    if getattr(column, "dimensions", None) not in (None, config.get_dimensions()):
        errors.append(
            checks.Error(
                f"{config.label}: column {config.column!r} holds {column.dimensions} "
                "dimensions but the "
                f"config embeds {config.get_dimensions()}.",
                hint="Make EmbeddingConfig(dimensions=...) or AUTOEMBED['DIMENSIONS'] match "
                "the column.",
                obj=config.model_class,
                id="autoembed.E005",
            )
        )
    return errors


def _too_many_dimensions(config: EmbeddingConfig) -> checks.CheckMessage | None:
    if not (config.index and config.get_dimensions() > HNSW_MAX_DIMENSIONS):
        return None
    return checks.Error(
        f"{config.label}: {config.get_dimensions()} dimensions is over the "
        f"{HNSW_MAX_DIMENSIONS} an HNSW "
        "halfvec index can hold.",
        hint="Ask the model for fewer dimensions (text-embedding-3 models take "
        "dimensions=), "
        "or declare index=False.",
        obj=config.model_class,
        id="autoembed.E006",
    )


def _chunks_cleared_on_update(config: EmbeddingConfig) -> checks.CheckMessage | None:
    if not (config.chunked and config.clear_on_update):
        return None
    return checks.Error(
        f"{config.label} stores its vectors in chunks, so there is no vector on the "
        "row "
        "to clear on update.",
        hint="Drop clear_on_update=True: a row's old chunks are replaced when its new "
        "text is embedded.",
        obj=config.model_class,
        id="autoembed.E009",
    )


def _unknown_too_long(config: EmbeddingConfig) -> checks.CheckMessage | None:
    if config.too_long in ("truncate", "fail"):
        return None
    return checks.Error(
        f"{config.label}: too_long={config.too_long!r} is neither 'truncate' nor 'fail'.",
        hint="Choose too_long='truncate' (cut at the model's limit, logged) or 'fail' "
        "(dead-lettered at once), or store long texts in chunks with chunk_tokens=.",
        obj=config.model_class,
        id="autoembed.E010",
    )


def _chunk_sizes_unusable(config: EmbeddingConfig) -> checks.CheckMessage | None:
    if not (config.chunked and not 0 <= config.chunk_overlap < int(config.chunk_tokens or 0)):
        return None
    return checks.Error(
        f"{config.label}: chunk_tokens={config.chunk_tokens} and "
        f"chunk_overlap={config.chunk_overlap} cannot make chunks.",
        hint="Give chunk_tokens a positive size and chunk_overlap a smaller one "
        "(at most half of it is used).",
        obj=config.model_class,
        id="autoembed.E011",
    )


def _text_search_without_fields(config: EmbeddingConfig) -> checks.CheckMessage | None:
    if not (config.text_search and not config.template_fields()):
        return None
    return checks.Error(
        f"{config.label}: text_search={config.text_search!r} needs fields to search, "
        "and this config embeds a custom content function only.",
        hint="Declare fields=[...] (or a template) beside content_function, or drop text_search.",
        obj=config.model_class,
        id="autoembed.E012",
    )


# Checked in this order, so that errors come out as they always have.
_OPTION_CHECKS: tuple[Callable[[EmbeddingConfig], checks.CheckMessage | None], ...] = (
    _too_many_dimensions,
    _chunks_cleared_on_update,
    _unknown_too_long,
    _chunk_sizes_unusable,
    _text_search_without_fields,
)


def _shared_column(config: EmbeddingConfig, other: str) -> checks.CheckMessage:
    """``config`` writes the column the config labelled ``other`` writes already (E007)."""
    meta = config.model_class._meta
    return checks.Error(
        f"{config.label} and {other} both write {meta.db_table}.{config.column}.",
        hint="Give each EmbeddingConfig its own column=.",
        obj=config.model_class,
        id="autoembed.E007",
    )


def _check_routing(config: Any) -> list[checks.CheckMessage]:
    """The database a declared model is written to must hold this app's queue and tables too."""
    model = config.model_class
    using = router.db_for_write(model) or DEFAULT_DB_ALIAS
    if router.allow_migrate(using, "django_autoembed"):
        return []
    return [
        checks.Error(
            f"{config.label} is written to database {using!r}, where your DATABASE_ROUTERS do not "
            "let "
            "django_autoembed migrate: its triggers would find no queue there.",
            hint=f"Let allow_migrate() return True for app 'django_autoembed' on {using!r}, then "
            "run "
            f"`python manage.py migrate --database {using}`.",
            obj=model,
            id="autoembed.E008",
        )
    ]


@checks.register("autoembed")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    out: list[checks.CheckMessage] = []
    try:
        autoembed_settings.current()
    except ConfigurationError as exc:  # every other check reads the settings: say only this
        return [
            checks.Error(
                str(exc),
                hint="Fix AUTOEMBED in your settings; the docs' settings reference lists each "
                "key and its default.",
                id="autoembed.E013",
            )
        ]
    uses_openai = any(
        (c.provider or autoembed_settings.current().provider) == "openai"
        for c in registry.declared()
    )
    if uses_openai and not (
        autoembed_settings.current().api_key or os.environ.get("OPENAI_API_KEY")
    ):
        out.append(
            checks.Warning(
                "The openai provider has no API key, so nothing can be embedded.",
                hint="Set OPENAI_API_KEY or AUTOEMBED['API_KEY'], or set AUTOEMBED['PROVIDER'] to "
                "'local'.",
                id="autoembed.W002",
            )
        )
    budget, timeout = (
        float(autoembed_settings.current().endpoint_time_budget),
        float(autoembed_settings.current().push_timeout),
    )
    if autoembed_settings.current().endpoint_token and budget >= timeout:
        out.append(
            checks.Warning(
                f"AUTOEMBED['ENDPOINT_TIME_BUDGET'] ({budget:g} s) is not below PUSH_TIMEOUT "
                f"({timeout:g} s): pg_net gives up on a POST before the endpoint answers it, and "
                "its jobs are posted again while still being embedded.",
                hint="Keep ENDPOINT_TIME_BUDGET a few seconds below PUSH_TIMEOUT.",
                id="autoembed.W004",
            )
        )
    return out


@checks.register("autoembed", checks.Tags.urls)
def check_endpoint(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings
    from django.urls import NoReverseMatch, reverse

    if not getattr(settings, "ROOT_URLCONF", None):
        return []
    try:
        path = reverse("django_autoembed:embed")
    except NoReverseMatch:
        return []
    if autoembed_settings.current().endpoint_token:
        return []
    return [
        checks.Warning(
            f"The embedding endpoint is routed at {path} but AUTOEMBED['ENDPOINT_TOKEN'] is not "
            "set, so it "
            "answers 404 and pg_cron's calls do nothing.",
            hint="Set ENDPOINT_TOKEN to a long random secret (and ENDPOINT_URL), then run "
            "`manage.py autoembed_sync`; "
            "or remove include('django_autoembed.urls') if you only use the pull worker.",
            id="autoembed.W003",
        )
    ]
