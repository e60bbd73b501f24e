"""manage.py autoembed_grants ROLE: the GRANTs a least-privilege role needs for processing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connections, transaction

from ...grants import statements


class Command(BaseCommand):
    help = (
        "Print the GRANT statements that let ROLE run process_embeddings, the endpoint and "
        "autoembed_status "
        "(writing your tables needs only the grants on them). --apply runs them, as the owner."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("role", help="the database role your application or worker connects as")
        parser.add_argument(
            "--apply", action="store_true", help="run the statements instead of printing them"
        )
        parser.add_argument(
            "--database", default="default", help="the database alias to work on (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        lines = statements(options["role"], options["database"])
        if not options["apply"]:
            self.stdout.write("\n".join(lines))
            return
        with (
            transaction.atomic(using=options["database"]),
            connections[options["database"]].cursor() as cursor,
        ):
            for line in lines:
                cursor.execute(line)
        self.stdout.write(
            f"Granted {options['role']!r} what processing needs ({len(lines)} statements)."
        )
