"""manage.py autoembed_status: how far embeddings are behind, per config."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ... import changes
from ...declarations import registry
from ...exceptions import QueueMissing, UnknownConfig
from ...hnsw.deferral import IndexStatus
from ...status import ConfigStatus, PushStatus, Status, collect

LAG_EXIT = 3


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class Command(BaseCommand):
    help = "Rows, vectors, queued jobs, failures per embedding config, and the push path's state."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--json", action="store_true", help="print one JSON document for scripts"
        )
        parser.add_argument(
            "--fail-on-lag",
            type=float,
            metavar="SECONDS",
            help=f"exit {LAG_EXIT} when the oldest job a write queued is older than this (a "
            "backfill's jobs wait their turn, and a Batch API batch's window: not lag)",
        )
        parser.add_argument(
            "--config", action="append", default=[], help="only this config (repeatable)"
        )
        parser.add_argument(
            "--exact",
            action="store_true",
            help="count every table in full (by default tables of 100,000 rows or more are "
            "estimated from a sample, so a monitoring probe scans no table whole)",
        )
        parser.add_argument(
            "--database", default="default", help="the database alias to work on (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        changes.refresh(options["database"], 0)
        try:
            configs = [registry.get(c) for c in options["config"]] or None
            status = collect(options["database"], configs, exact=options["exact"])
        except (UnknownConfig, QueueMissing) as exc:
            raise CommandError(str(exc)) from exc
        lag = options["fail_on_lag"]
        lagging = lag is not None and (status.oldest_write_age_s or 0) > lag
        if options["json"]:
            self.stdout.write(json.dumps({**status.as_dict(), "lagging": lagging}, indent=2))
        else:
            self._table(status)
            if lagging:
                self.stderr.write(
                    f"Lagging: the oldest job a write queued waited "
                    f"{_age(status.oldest_write_age_s)} (limit {lag:g} s). Is a worker running? "
                    "See `manage.py process_embeddings`."
                )
        if lagging:
            sys.exit(LAG_EXIT)

    def _table(self, status: Status) -> None:
        for line in [*_table_lines(status.configs), *_notes(status)]:
            self.stdout.write(line)


HEAD = (
    "config",
    "table.column",
    "rows",
    "embedded",
    "missing",
    "queued",
    "oldest",
    "failures",
    "chunks",
    "tokens 30d",
    "cost 30d",
    "index",
)


def _row(c: ConfigStatus) -> tuple[str, ...]:
    """One config's cells, in HEAD's order; an estimated count starts with "~"."""
    if c.unreadable:  # not counted: the notes say why
        return (c.config, f"{c.table}.{c.column}", *["?"] * 7, str(c.tokens_30d), "-", "-")
    return (
        c.config,
        f"{c.table}.{c.column}",
        f"~{c.rows}" if c.estimated else str(c.rows),
        f"~{c.embedded}" if c.estimated else str(c.embedded),
        f"~{c.missing}" if c.estimated else str(c.missing),
        str(c.queued_rows),
        _age(c.oldest_job_age_s),
        str(c.failures),
        "-" if c.chunks is None else str(c.chunks),
        str(c.tokens_30d),
        "-" if c.cost_30d_usd is None else f"${c.cost_30d_usd:.2f}",
        c.index or "-",
    )


def _table_lines(configs: list[ConfigStatus]) -> list[str]:
    """The head, a rule, and a row per config: names to the left, counts to the right."""
    rows = [_row(c) for c in configs]
    widths = [max(len(r[i]) for r in [HEAD, *rows]) for i in range(len(HEAD))]
    lines = []
    for i, row in enumerate([HEAD, *rows]):
        lines.append(
            "  ".join(
                v.ljust(w) if j < 2 or j == len(HEAD) - 1 else v.rjust(w)
                for j, (v, w) in enumerate(zip(row, widths, strict=False))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _notes(status: Status) -> list[str]:
    """The lines under the table: the queue, the push path, then whatever needs a look."""
    lines = [
        f"\nqueue {status.queue!r}: {status.queue_depth} messages, "
        f"oldest {_age(status.oldest_message_age_s)}; of writes, oldest "
        f"{_age(status.oldest_write_age_s)}"
        + (
            f"; {status.batch_held_jobs} held by Batch API batches"
            if status.batch_held_jobs
            else ""
        ),
        _push_line(status.push),
    ]
    for name, count in status.former_queues.items():
        lines.append(
            f"queue {name!r}, used before the queue was renamed, still holds {count} jobs: run "
            "`manage.py autoembed_sync` once no worker runs the old settings"
        )
    for pause in status.paused:
        lines.append(f"paused: {pause['provider']}: {pause['error']} (since {pause['since']})")
    lines += [
        f"config {c.config}: paused ({c.paused}); the others go on"
        for c in status.configs
        if c.paused
    ]
    lines += [
        f"config {c.config}: not counted: {c.unreadable}" for c in status.configs if c.unreadable
    ]
    lines += [
        f"config {c.config}: model changed: {c.model_changed}"
        for c in status.configs
        if c.model_changed
    ]
    lines += [changes.describe(change) for change in status.changes]
    for incident in status.incidents:
        lines.append(
            f"incident: {incident['subject']}: {incident['count']} times since "
            f"{incident['first_seen']}: {incident['error']}"
        )
    for batch in status.batches:
        lines.append(
            f"Batch API: {batch['config']}: {batch['batch_id'] or '(submitting)'} "
            f"{batch['status']}, {batch['inputs']} texts ({batch['tokens']} tokens) for "
            f"{batch['jobs']} jobs, submitted {batch['submitted']}"
        )
    for budget in status.batch_budgets:
        said = ", as the API stated in a refusal" if budget["stated"] else ""
        lines.append(
            f"Batch API budget for {budget['model']}: {budget['in_flight']} of "
            f"{budget['limit']} enqueued tokens in flight{said}"
        )
    lines += [line for budget in status.budgets if (line := _budget_line(budget))]
    lines += [
        _index_note(c)
        for c in status.configs
        if c.index in (IndexStatus.DEFERRED, IndexStatus.BUILDING)
    ]
    return lines


def _push_line(push: PushStatus | None) -> str:
    """Whether pg_cron posts the queue to the endpoint, and if not, why not."""
    if push is None or not (push.pg_cron and push.pg_net):
        missing = [
            n
            for n, ok in (("pg_cron", push and push.pg_cron), ("pg_net", push and push.pg_net))
            if not ok
        ]
        return (
            f"push path: off ({' and '.join(missing)} not installed); "
            "embed with `manage.py process_embeddings`"
        )
    if not push.job_active:
        return (
            "push path: pg_cron and pg_net present, no active job "
            "(set AUTOEMBED ENDPOINT_URL and ENDPOINT_TOKEN, then `manage.py autoembed_sync`)"
        )
    last = (
        f"last run {push.last_run_at} ({push.last_run_status})"
        if push.last_run_at
        else "not run yet"
    )
    return f"push path: active every {push.schedule}, {last}"


def _budget_line(budget: dict[str, Any]) -> str | None:
    """A rate budget's limits and use, or None for a budget without limits."""
    limits = [
        f"{budget[k]} {unit}/min"
        for k, unit in (
            ("tokens_per_minute", "tokens"),
            ("requests_per_minute", "requests"),
        )
        if budget[k]
    ]
    if not limits:
        return None
    return (
        f"rate budget: {budget['provider']}: {', '.join(limits)}, "
        f"using {budget['share']:.0%} of it, {budget['throttled']} answers 429 so far"
    )


def _index_note(c: ConfigStatus) -> str:
    deferred = c.index == IndexStatus.DEFERRED
    what = "deferred until the backlog drains" if deferred else "being built"
    return f"index of {c.config}: {what}; searches scan exactly meanwhile"
