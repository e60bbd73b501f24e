"""manage.py autoembed_sync: write AUTOEMBED's queue and push settings into the database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ...sync import sync


class Command(BaseCommand):
    help = "Store the endpoint URL/token and (re)create or remove the pg_cron job from AUTOEMBED."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--database", default="default", help="the database alias to work on (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        lines = sync(options["database"])
        for line in lines or ["autoembed: database already matches AUTOEMBED"]:
            self.stdout.write(line)
