"""manage.py autoembed_reembed: re-embed one config in place with the model it declares now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from ... import identity
from ...backfill import backfill
from ...batches import estimate
from ...declarations import registry
from ...exceptions import ConfigurationError, UnknownConfig


class Command(BaseCommand):
    help = (
        "Re-embed a config in place with the model, provider and dimensions its declaration "
        "names now: forget its stored vectors, record the new model, queue every row. "
        "Searches return only the rows re-embedded so far until the queue drains; for no "
        "downtime, add a second config beside it instead."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("config", help="the config's label, e.g. blog.Post.embedding")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="do not ask for confirmation",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="re-embed even though the stored vectors were made by the declared model",
        )
        parser.add_argument(
            "--database", default="default", help="the database alias to work on (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        try:
            config = registry.get(options["config"])
            [cost] = estimate.estimate([config], using=using, every_row=True)
        except (UnknownConfig, ConfigurationError) as exc:
            raise CommandError(str(exc)) from exc
        stored = identity.stored(using, config)
        wanted = identity.declared(config)
        resuming = identity.clearing(using, config)
        if stored == wanted and not options["force"] and not resuming:
            raise CommandError(
                f"{config.label}: its stored vectors were made by {wanted}, the model it "
                "declares: nothing to re-embed. Change the declaration first; --force "
                "re-embeds anyway (texts embedded in the last VECTOR_STORE_DAYS come back from "
                "the vector store, at no cost)."
            )
        self.stdout.write(
            f"{config.label}: its stored vectors were made by "
            f"{stored or 'a model not recorded'}; every row is to be embedded again by "
            f"{wanted}."
        )
        self.stdout.write("\n".join(estimate.render([cost], "Re-embedding every row")))
        self.stdout.write(
            "Until the queue drains, its searches return only the rows embedded again so far. "
            "For no downtime, keep this config and add a second one with the new model beside "
            "it (docs: how-to 'Change the embedding model')."
        )
        if options["interactive"] and not _confirmed():
            raise CommandError("Nothing was changed.")
        # Recorded first, pinned and clearing: from its commit no process writes or searches
        # this config (a process declaring the old model never again), until every old
        # vector is gone; a run stopped half way leaves it so, and the next run finishes.
        with transaction.atomic(using=using):
            identity.record(using, config, wanted, pinned=True, clearing=True)
        cleared = identity.clear(using, config)
        identity.cleared(using, config)
        self.stdout.write(f"Forgot {cleared} vectors of {config.label}; {wanted} makes them now.")
        dimensions = identity.column_dimensions(using, config)
        if dimensions is not None and dimensions != wanted.dimensions:
            self.stdout.write(
                f"Its column holds {dimensions} dimensions and the declaration "
                f"{wanted.dimensions}: run `python manage.py migrate` now (write the "
                "migration first with `makemigrations`), then `python manage.py "
                f"process_embeddings --backfill --config {config.label}` queues the rows."
            )
            return
        queued = backfill(config, using=using)
        self.stdout.write(
            f"Queued {queued} rows: a running worker embeds them, or run "
            "`python manage.py process_embeddings --once`."
        )


def _confirmed() -> bool:
    try:
        return input("Type 'yes' to forget the stored vectors and queue every row: ") == "yes"
    except (EOFError, OSError):  # no terminal: only --noinput goes ahead
        return False
