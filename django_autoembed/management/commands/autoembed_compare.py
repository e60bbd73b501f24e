"""manage.py autoembed_compare: what a new model does to search, before searches move to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ... import changes
from ...compare import compare, sample_texts
from ...declarations import registry
from ...exceptions import AutoembedError


class Command(BaseCommand):
    help = (
        "Ask two configs of one model (the old one and the new one beside it) the same "
        "queries and print how many of their top results they share (overlap@k). Each query "
        "is embedded once by each config's provider."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("old", help="the config searches use now, e.g. blog.Post.embedding")
        parser.add_argument("new", help="the config beside it, e.g. blog.Post.v2")
        parser.add_argument(
            "--queries",
            type=Path,
            help="a file of queries, one a line (default: the texts of random rows)",
        )
        parser.add_argument(
            "--sample", type=int, default=20, help="random rows to take queries from (20)"
        )
        parser.add_argument("-k", type=int, default=10, help="results compared a query (10)")
        parser.add_argument(
            "--database", default="default", help="the database alias to work on (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        changes.refresh(using, 0)  # a model change's shadow may be compared with its live one
        try:
            old, new = registry.get(options["old"]), registry.get(options["new"])
            if options["queries"] is not None:
                lines = options["queries"].read_text(encoding="utf-8").splitlines()
                queries = [line.strip() for line in lines if line.strip()]
            else:
                queries = sample_texts(old, new, options["sample"], using)
            result = compare(old, new, queries, k=options["k"], using=using)
        except (AutoembedError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("\n".join(result.lines()))
