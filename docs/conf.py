"""Sphinx configuration: furo, MyST Markdown, autodoc over the package (``make docs``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent / "_ext")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs.django_settings")

from django_autoembed import __version__  # noqa: E402

project = "django-autoembed"
author = "The django-autoembed authors"
copyright = "2026, the django-autoembed authors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxcontrib_django",
    "autoembed_docs",
]
django_settings = "docs.django_settings"

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist", "fieldlist", "substitution"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"django-autoembed {release}"
html_static_path = ["_static"]
# Nothing is fetched at build time: no intersphinx, no remote images.
nitpicky = False
