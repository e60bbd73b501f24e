"""Model fields the mixin adds that Django ships only inside django.contrib.postgres.

Django 6.1 refuses ``SearchVectorField`` on a project without
``django.contrib.postgres`` in INSTALLED_APPS (check postgres.E005), and
``INSTALLED_APPS += ["django_autoembed"]`` is meant to be the whole install.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.search import SearchVectorExact
from django.db import models


class TsvectorField(models.Field):  # type: ignore[type-arg]
    """A ``tsvector`` column; ``column=SearchQuery(...)`` matches with ``@@`` as on Django's."""

    description = "PostgreSQL text search vector"

    def db_type(self, connection: Any) -> str:
        return "tsvector"


TsvectorField.register_lookup(SearchVectorExact)
