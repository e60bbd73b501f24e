"""manage.py autoembed_retry: queue rows that gave up again (or discard them)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...failures import EmbeddingFailure, discard, retry


class Command(BaseCommand):
    help = (
        "Queue rows recorded as EmbeddingFailure again (the admin's retry action), or discard them."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--config",
            action="append",
            default=[],
            help="only failures of this config, e.g. blog.Post.embedding (repeatable)",
        )
        parser.add_argument("--all", action="store_true", help="every recorded failure")
        parser.add_argument(
            "--discard", action="store_true", help="delete the failures instead of retrying"
        )
        parser.add_argument(
            "--database", default="default", help="the database alias to work on (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["all"] and not options["config"]:
            raise CommandError(
                "Say which failures: --config app.Model.config (repeatable) or --all."
            )
        failures = EmbeddingFailure.objects.using(options["database"]).all()
        if options["config"]:
            failures = failures.filter(config__in=options["config"])
        if options["discard"]:
            self.stdout.write(f"Discarded {discard(failures)} failures.")
            return
        result = retry(failures)
        self.stdout.write(f"Queued {result.queued} rows again.")
        for reason in result.refused:
            self.stderr.write(f"Kept {reason}")
