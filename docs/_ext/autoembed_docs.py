"""Reference tables generated from the code, so the docs cannot drift from it."""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config


def _offline(app: Sphinx, config: Config) -> None:
    """sphinxcontrib-django adds intersphinx inventories on the internet; the docs build
    fetches nothing (a warning is an error, and CI has no internet)."""
    config.intersphinx_mapping = {}  # type: ignore[attr-defined]


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _offline, priority=850)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
