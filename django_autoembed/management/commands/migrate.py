"""Django's migrate with our autodetector and without our database checks.

Django requires makemigrations and migrate to agree on the autodetector. And
migrate runs the database-tagged checks before it migrates: ours compare the
database with what migrations install, so they would block the very command
that satisfies them. ``check --database`` still runs them.
"""

from typing import Any

from django.core.management.commands.migrate import Command as MigrateCommand

from ... import changes
from ...autodetector import AutoembedAutodetector
from ...dbchecks import skipped


class Command(MigrateCommand):
    autodetector = AutoembedAutodetector

    def check(self, *args: Any, **kwargs: Any) -> None:
        with skipped():
            super().check(*args, **kwargs)

    def handle(self, *args: Any, **options: Any) -> None:
        # A model change says what it costs as it begins, before its backfill is queued.
        if options["verbosity"] >= 1:
            # (between Django's "Applying <migration>..." and its "OK")
            changes.announce_to = lambda said: self.stdout.write(f"\n{said}\n", ending="")
        try:
            super().handle(*args, **options)
        finally:
            changes.announce_to = None
