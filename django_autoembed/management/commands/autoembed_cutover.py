"""manage.py autoembed_cutover: move a model change's searches to the new vectors now, or hold
its automatic cutover."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from django.core.management.base import BaseCommand, CommandError
from django.db import ProgrammingError

from ... import changes
from ...exceptions import ConfigurationError, NotOwner

# Seconds between two looks at a shadow that --wait waits for.
POLL = 2.0


class Command(BaseCommand):
    help = (
        "Cut a model change over to the new vectors: once every row has one, searches read "
        "them and the columns are swapped in one short transaction. --hold keeps a change "
        "from cutting over by itself; --automatic lets it again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("config", help="the changing config's label, e.g. blog.Post.embedding")
        what = parser.add_mutually_exclusive_group()
        what.add_argument(
            "--hold",
            action="store_true",
            help="do not cut over by itself once complete: wait for this command",
        )
        what.add_argument(
            "--automatic",
            action="store_true",
            help="cut over by itself once complete (the default of AUTOEMBED's "
            "CHANGE_AUTOMATIC_CUTOVER)",
        )
        parser.add_argument(
            "--allow-missing",
            action="store_true",
            help="cut over although rows failed in the new column (they have no vector then)",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="wait up to this long for the new vectors to be complete (default: do not wait)",
        )
        parser.add_argument(
            "--database", default="default", help="the database alias to work on (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        change = self._change(using, options["config"])
        if options["hold"] or options["automatic"]:
            automatic = bool(options["automatic"])
            changes.EmbeddingChange.objects.using(using).filter(pk=change.config).update(
                automatic=automatic
            )
            said = "cuts over by itself once complete" if automatic else "waits for this command"
            self.stdout.write(f"{change.config}: the change to {change.model} {said}.")
            return
        try:
            changes.require_owner(using, change)
            self._cut_over(using, change, options)
        except NotOwner as exc:
            raise CommandError(str(exc)) from exc
        except (ProgrammingError, psycopg.errors.InsufficientPrivilege) as exc:
            if changes.privilege_refused(exc) is None:
                raise
            raise CommandError(changes.refused_step(change, exc)) from exc

    def _cut_over(self, using: str, change: changes.Change, options: dict[str, Any]) -> None:
        deadline = time.monotonic() + max(0.0, options["wait"])
        while True:
            allow = options["allow_missing"]
            waiting = (
                changes.why_waiting(using, change, allow_missing=allow)
                if change.switched is None
                else None
            )
            if waiting == changes.INDEX_NOT_BUILT:
                self.stdout.write(f"{change.config}: building the index of {change.shadow}...")
                if not changes.build_index(using, change):
                    time.sleep(POLL)  # another process builds it
                continue
            if waiting is None:
                break
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"{change.config}: not cut over: {waiting}. Run a worker (`python manage.py "
                    "process_embeddings`) until `autoembed_status` shows it complete, or add "
                    "--wait SECONDS."
                )
            time.sleep(POLL)
            change = self._change(using, change.config)
        try:
            done = changes.advance(using, change, now=True, allow_missing=options["allow_missing"])
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        if done != "cut over":
            raise CommandError(f"{change.config}: not cut over: {done}.")
        self.stdout.write(
            f"{change.config}: cut over to {change.provider} {change.model} "
            f"({change.dimensions} dimensions). The old vectors are kept in "
            f"{change.previous} until the drop migration: run `python manage.py "
            "makemigrations` and `migrate` when you no longer want them."
        )

    def _change(self, using: str, label: str) -> changes.Change:
        known = changes.refresh(using, 0)
        change = known.get(label)
        if change is None or not change.in_flight:
            under_way = ", ".join(c for c, v in known.items() if v.in_flight) or "none"
            state = "was cut over already" if change is not None else "is not changing"
            raise CommandError(
                f"{label} {state}. Model changes under way: {under_way}. A change begins when "
                "the migration `makemigrations` writes for a changed model is applied."
            )
        return change
