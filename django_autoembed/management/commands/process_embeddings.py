"""manage.py process_embeddings: the pull worker."""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from ... import changes, db, settings
from ...backfill import backfill
from ...batches import estimate
from ...declarations import registry
from ...exceptions import ConfigurationError, UnknownConfig
from ...worker import Worker, WorkerOptions, default_options

VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.INFO, 3: logging.DEBUG}


class Command(BaseCommand):
    help = (
        "Embed queued rows: read the queue, call the provider, write vectors. Ctrl-C stops cleanly."
    )

    def add_arguments(self, parser: Any) -> None:
        _add_throughput_arguments(parser)
        _add_run_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        _configure_logging(options["verbosity"])
        if options["estimate"]:
            for line in estimate.render(
                estimate.estimate(self._configs(options["config"], options["database"]))
            ):
                self.stdout.write(line)
            return
        if options["backfill"]:
            self._backfill(options["database"], options["config"])
        worker = Worker(
            default_options(
                batch_size=options["batch_size"],
                max_requests=options["max_requests"],
                concurrency=options["concurrency"],
                visibility_timeout=options["visibility_timeout"],
                poll_interval=options["poll_interval"],
                once=options["once"],
                using=options["database"],
                max_downtime=options["max_downtime"],
                lock_wait=options["lock_wait"],
                batch_api=options["batch_api"],
                progress=self.stdout._out if options["verbosity"] >= 1 else None,
            )
        )
        code = _run(worker, options["database"])
        if worker.o.progress is not None and worker.o.progress.isatty():
            self.stdout.write("")
        if options["verbosity"] >= 1:
            self.stdout.write(f"Embedded {worker.rows_done} rows.")
        for line in _left_behind(worker):
            self.stderr.write(line)
        if code:
            sys.exit(code)

    def _backfill(self, using: str, labels: list[str]) -> None:
        db.prepare(connections[using])  # its pages are the worker's work too
        for config in self._configs(labels, using):
            queued = backfill(config, using=using)
            self.stdout.write(f"{config.label}: queued {queued} rows without an embedding")

    def _configs(self, labels: list[str], using: str) -> list[Any]:
        changes.refresh(using, 0)  # a model change's shadow is a config of its own
        try:
            return [registry.get(c) for c in labels] or registry.on_database(using)
        except UnknownConfig as exc:
            raise CommandError(str(exc)) from exc


def _add_throughput_arguments(parser: CommandParser) -> None:
    """How much work a worker takes on at once, and how often it looks for more."""
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"inputs per embedding request (default {settings.default('BATCH_SIZE')})",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        help="embedding requests in flight per lane (pooled across lanes)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="batches processed side by side, each on its own connection "
        f"(default {settings.default('CONCURRENCY')})",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        help="seconds a read job stays hidden from other workers",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        help="seconds between polls when no NOTIFY arrives (default "
        f"{WorkerOptions.poll_interval:g})",
    )


def _add_run_arguments(parser: CommandParser) -> None:
    """What a run does besides embedding the queue, what it waits for, and when it stops."""
    parser.add_argument(
        "--once",
        action="store_true",
        help="process until the queue has no visible job, then exit",
    )
    parser.add_argument(
        "--backfill", action="store_true", help="first queue rows whose embedding is NULL"
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="limit --backfill and --estimate to this config (repeatable)",
    )
    parser.add_argument(
        "--max-downtime",
        type=float,
        help="seconds to keep reconnecting to a lost database before exiting 1 "
        f"(default {WorkerOptions.max_downtime:g})",
    )
    parser.add_argument(
        "--lock-wait",
        type=float,
        help="with --once: seconds to wait for rows other transactions keep locked before "
        f"leaving them queued (default {WorkerOptions.lock_wait:g})",
    )
    parser.add_argument(
        "--batch-api",
        action="store_true",
        help="embed texts no process has a vector for through the provider's Batch API "
        "(half the price, results within 24 h); with --once, waits for the batches",
    )
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="print the rows, tokens and price (embeddings API and Batch API) of what is "
        "left to embed, and exit; sends and queues nothing",
    )
    parser.add_argument(
        "--database", default="default", help="the database alias to work on (default: default)"
    )


def _configure_logging(verbosity: int) -> None:
    """The app's log at the level -v asks for, to stderr unless logging is set up already."""
    log = logging.getLogger("django_autoembed")
    log.setLevel(VERBOSITY_LEVELS.get(verbosity, logging.INFO))
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)


def _run(worker: Worker, using: str) -> int:
    """``worker.run()``'s exit code; a provider that cannot start is a CommandError."""
    # Startup objects (Django, the app registry) live as long as the process:
    # freezing them keeps full collections from rescanning them while working.
    gc.freeze()
    # The system checks' and the backfill's connection: the lanes open their own.
    connections[using].close()
    try:
        code = worker.run()
    except ConfigurationError as exc:  # a provider that cannot start; the jobs stay queued
        raise CommandError(str(exc)) from exc
    # And at exit the interpreter's final collections would walk everything
    # created since: ~0.6 s after a 5,000-row --once run, longer than its last batch.
    gc.freeze()
    return code


def _left_behind(worker: Worker) -> list[str]:
    """What the run leaves undone and why, for stderr."""
    lines = []
    if worker.o.once and not worker.exit_reason:
        waiting = _queued(worker.o.using)
        if waiting and not worker.left_busy:
            lines.append(
                f"Left {waiting} jobs queued: they wait for a retry after a failure (see "
                "the log). The next run, or a worker left running, embeds them."
            )
    if worker.left_busy:
        lines.append(
            f"Left {worker.left_busy} rows queued: other transactions held their row locks for "
            f"over {worker.o.lock_wait:g} s. The next run embeds them."
        )
    if worker.exit_reason:
        lines.append(f"process_embeddings: {worker.exit_reason}")
    return lines


def _queued(using: str) -> int:
    from django.db import DatabaseError, connections

    from ... import queue

    try:
        with connections[using].cursor() as cursor:
            return queue.depth(cursor).messages
    except DatabaseError:
        return 0
