"""Regenerate the golden SQL: python -m tests.golden"""

import os
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
import django

django.setup()
from tests.testapp.models import Article  # noqa: E402

(constraint,) = [c for c in Article._meta.constraints if c.column == "body_embedding"]
(Path(__file__).parent / "article_body_embedding.sql").write_text(
    ";\n".join(constraint.statements(Article)) + ";\n"
)
