"""Which vector columns a plain ``save()`` may write (``EmbeddingMixin``, ``bulk_create``).

A plain ``save()`` writes every field, and an instance loaded (or saved) before the worker
wrote its vector holds the old one, or none: written back, it would erase the new vector,
and no trigger fires for a text that did not change. So each instance remembers the vectors
it was loaded or last saved with, and a plain save leaves out those the code did not assign
since. A leaf: the mixin and the queryset both use it.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from .declarations import registry


def vector_attnames(model: type[models.Model]) -> list[str]:
    """The attributes of the vector columns the worker writes on ``model``'s rows (read for
    every row loaded: kept until the registry changes)."""
    cached = _attnames.get(model)
    if cached is not None and cached[0] == registry.generation:
        return cached[1]
    owners = [model, *model._meta.get_parent_list()]  # a child's parent table holds them
    names = {c.column for m in owners for c in registry.for_model(m) if not c.chunked}
    found = [f.attname for f in model._meta.concrete_fields if f.name in names]
    _attnames[model] = (registry.generation, found)
    return found


_attnames: dict[type[models.Model], tuple[int, list[str]]] = {}


def loaded_vectors(instance: models.Model) -> dict[str, Any]:
    """The vectors ``instance`` was loaded or last saved with (deferred ones: none)."""
    state = instance.__dict__
    return {a: state[a] for a in vector_attnames(type(instance)) if a in state}


def as_loaded(instance: models.Model, loaded: dict[str, Any], attname: str) -> bool:
    """The code did not assign this vector since the instance was loaded or saved."""
    return attname in loaded and instance.__dict__.get(attname) is loaded[attname]


def remember(instance: models.Model, fields: set[str] | None) -> dict[str, Any]:
    """The vectors to remember once ``fields`` (None: all) were loaded or written: those
    now, the others as they were."""
    fresh = loaded_vectors(instance)
    if fields is None:
        return fresh
    kept = dict(instance.__dict__.get("_autoembed_loaded") or {})
    meta = instance._meta
    for attname, value in fresh.items():
        field = next(f for f in meta.concrete_fields if f.attname == attname)
        if field.name in fields or attname in fields:
            kept[attname] = value
    return kept


def left_out(
    instance: models.Model, loaded: dict[str, Any], field: Any, named: set[str] | None
) -> bool:
    """A plain save leaves this column out: a vector the worker writes that the code neither
    assigned since the instance was loaded or saved nor named in ``update_fields``."""
    if named is not None and (field.name in named or field.attname in named):
        return False
    return as_loaded(instance, loaded, field.attname)
