"""One batch of queue messages: validate, read, embed, write, acknowledge.

Used by the pull worker and by the push endpoint alike. No database
transaction is open while the provider is called; writes land only where the
row still holds the text that was embedded, so a concurrent edit (which has
queued its own job) is never overwritten by a stale vector.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import psycopg
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from psycopg import sql

from . import conf, queue
from .cache import VectorLRU, provider_key
from .config import EmbeddingConfig, registry
from .exceptions import DimensionMismatch, ProviderError
from .providers.base import as_matrix, chunk_inputs
from .queue import Message
from .vectors import VectorArray, adapt, precision, vector_type

logger = logging.getLogger(__name__)

# Texts this process embedded lately, per provider/model/dimensions/column type.
recent_vectors = VectorLRU("RECENT_VECTORS")

JOB_KEYS = ("schema", "table", "contentFunction", "embeddingColumn")
BUSY_RETRY_SECONDS = 1


@dataclass
class Outcome:
    """What happened to one row of one message."""

    kind: str  # "done", "failed" or "busy"
    error: str | None = None
    retry_after: float | None = None


@dataclass
class BatchResult:
    completed: list[tuple[int, Any]] = field(default_factory=list)  # (msg_id, id as sent)
    failed: list[tuple[int, Any, str]] = field(default_factory=list)
    embedded: int = 0
    requests: int = 0
    dead: int = 0
    seconds: float = 0.0


@dataclass
class _Row:
    message: Message
    raw_pk: Any
    pk: Any = None
    config: EmbeddingConfig | None = None
    outcome: Outcome | None = None


class Processor:
    """Processes messages on one database alias with the given concurrency."""

    def __init__(self, *, using: str = "default", batch_size: int | None = None,
                 max_requests: int | None = None, pool: ThreadPoolExecutor | None = None) -> None:
        self.using = using
        self.batch_size = int(batch_size or conf.get("BATCH_SIZE"))
        self.max_requests = int(max_requests or conf.get("MAX_REQUESTS"))
        self.pool = pool  # shared by a worker's lanes; else one per call, max_requests wide
        self._schemas: dict[str, str | None] = {}

    # -- entry point ----------------------------------------------------------

    def process(self, messages: list[Message], *, deadline: float | None = None) -> BatchResult:
        started = time.monotonic()
        result = BatchResult()
        rows = [row for m in messages for row in self._expand(m)]
        groups: dict[str, list[_Row]] = {}
        for row in rows:
            if row.outcome is None and row.config is not None:
                groups.setdefault(row.config.label, []).append(row)
        for group in groups.values():
            siblings = {id(r.message) for r in group}
            acked = [r for r in rows if id(r.message) in siblings]
            self._run_config(group[0].config, group, acked, result, deadline)  # type: ignore[arg-type]
        unmatched = [m for m in messages if all(r.config is None for r in rows if r.message is m)]
        if unmatched:
            with transaction.atomic(using=self.using):
                self._acknowledge(unmatched, rows, result)
        for row in rows:
            assert row.outcome is not None
            if row.outcome.kind == "done":
                result.completed.append((row.message.msg_id, row.raw_pk))
            else:
                result.failed.append((row.message.msg_id, row.raw_pk, row.outcome.error or "busy"))
        result.seconds = time.monotonic() - started
        return result

    # -- validation -----------------------------------------------------------

    def _expand(self, message: Message) -> list[_Row]:
        body = message.body
        if not isinstance(body, dict):
            return [_Row(message, None, outcome=Outcome("failed", "job is not a JSON object"))]
        ids = body.get("ids") if "ids" in body else [body.get("id")]
        if not isinstance(ids, list) or not ids or any(i is None or isinstance(i, (dict, list, bool)) for i in ids):
            return [_Row(message, None, outcome=Outcome("failed", "job needs 'id' (or a list 'ids') of row keys"))]
        config, error = self._match(body)
        rows = []
        for raw in ids:
            row = _Row(message, raw, config=config)
            if config is None:
                row.outcome = Outcome("failed", error)
            else:
                try:
                    row.pk = config.model_class._meta.pk.to_python(raw)
                except (ValidationError, ValueError, TypeError):
                    row.outcome = Outcome("failed", f"id {raw!r} is not a valid key for {config.table}")
            rows.append(row)
        return rows

    def _match(self, body: dict[str, Any]) -> tuple[EmbeddingConfig | None, str]:
        values = [body.get(k) for k in JOB_KEYS]
        if not all(isinstance(v, str) and v for v in values):
            return None, f"job needs string values for {', '.join(JOB_KEYS)}"
        schema, table, function, column = cast(list[str], values)
        config = registry.match(table, function, column)
        if config is None or self._schema_of(config) != schema:
            return None, (
                f"no declared embedding matches {schema}.{table} "
                f"(contentFunction {function!r}, embeddingColumn {column!r}); "
                "deploy the code that declares it, or delete the job"
            )
        return config, ""

    def _schema_of(self, config: EmbeddingConfig) -> str | None:
        if config.table not in self._schemas:
            with connections[self.using].cursor() as cursor:
                cursor.execute(
                    "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                    "where c.oid = to_regclass(%s)",
                    [sql.Identifier(config.table).as_string(None)],
                )
                row = cursor.fetchone()
            self._schemas[config.table] = row[0] if row else None
        return self._schemas[config.table]

    # -- one config: read, embed, write ---------------------------------------

    def _run_config(self, config: EmbeddingConfig, rows: list[_Row], acked: list[_Row],
                    result: BatchResult, deadline: float | None) -> None:
        names = self._sql_names(config)
        pks = list({row.pk: None for row in rows})
        raw = self._raw()
        with psycopg.Cursor(raw) as cur:
            cur.execute(
                sql.SQL("select t.{pk}, {fn}(t) from {table} t where t.{pk} = any(%s::{pktype}[])").format(**names),
                [pks],
            )
            contents = dict(cur.fetchall())
        if not raw.autocommit and not connections[self.using].in_atomic_block:
            raw.commit()  # no transaction stays open across the API calls below

        texts = sorted({t for t in contents.values() if t})
        vectors, errors, requests = self._embed(config, texts, deadline)
        result.requests += requests
        by_text = dict(zip(texts, vectors))

        writes: dict[Any, tuple[str, np.ndarray | None]] = {}
        for row in rows:
            if row.pk not in contents:
                row.outcome = Outcome("done")  # row deleted: nothing to embed, no retry
                continue
            text = contents[row.pk]
            if text and text in errors:
                err = errors[text]
                row.outcome = Outcome("failed", str(err), getattr(err, "retry_after", None))
            else:
                writes[row.pk] = (text, by_text.get(text) if text else None)

        with transaction.atomic(using=self.using):
            written, busy = self._write(config, names, writes)
            result.embedded += len(written)
            for row in rows:
                if row.outcome is None:
                    row.outcome = Outcome("busy") if row.pk in busy else Outcome("done")
            self._acknowledge(list({id(r.message): r.message for r in acked}.values()), acked, result)

    def _sql_names(self, config: EmbeddingConfig) -> dict[str, sql.Composable]:
        meta = config.model_class._meta
        schema = self._schema_of(config) or "public"
        return {
            "table": sql.Identifier(schema, config.table),
            "pk": sql.Identifier(config.pk_column),
            "pktype": sql.SQL(meta.pk.rel_db_type(connections[self.using])),
            "fn": sql.Identifier(schema, config.function_name),
            "col": sql.Identifier(config.column),
            "vectype": sql.SQL(vector_type(config)),
        }

    def _raw(self) -> Any:
        connection = connections[self.using]
        connection.ensure_connection()
        return connection.connection

    def _embed(self, config: EmbeddingConfig, texts: list[str],
               deadline: float | None) -> tuple[list[Any], dict[str, Exception], int]:
        """Vectors for unique texts: recently embedded ones from memory, the rest from the provider.

        A row queued twice (edited again before the worker read it), or put back
        because the application held its lock, comes back with a text embedded
        moments ago; its vector is reused instead of paying for it again.
        """
        if not texts:
            return [], {}, 0
        column_type = vector_type(config)
        stored = precision(column_type)  # what the column keeps anyway
        scope = (*provider_key(config), column_type)
        keys = [(*scope, hashlib.blake2b(t.encode(), digest_size=16).digest()) for t in texts]
        known = recent_vectors.get_many(keys)
        missing = [i for i, key in enumerate(keys) if key not in known]
        fresh, errors, requests = self._call_provider(config, column_type, [texts[i] for i in missing], deadline)
        vectors: list[Any] = [known.get(key) for key in keys]
        remember = []
        for i, vector in zip(missing, fresh):
            vectors[i] = vector
            if vector is not None and texts[i] not in errors:
                remember.append((keys[i], vector.astype(stored)))
        recent_vectors.put_many(remember)
        return vectors, errors, requests

    def _call_provider(self, config: EmbeddingConfig, column_type: str, texts: list[str],
                       deadline: float | None) -> tuple[list[Any], dict[str, Exception], int]:
        """Embed unique texts, many per request, several requests in flight.

        A request refused for its input (not retryable) is split in halves until
        the bad input stands alone, so one poison row fails only itself.
        """
        if not texts:
            return [], {}, 0
        provider = config.get_provider()
        dims = config.get_dimensions()
        inputs = [provider.truncate(t) for t in texts]
        vectors: list[Any] = [None] * len(texts)
        errors: dict[str, Exception] = {}
        requests = 0
        max_inputs = max(1, min(self.batch_size, provider.max_inputs))
        limit = float(np.finfo(precision(column_type)).max)
        with ExitStack() as stack:
            pool = self.pool or stack.enter_context(
                ThreadPoolExecutor(max_workers=self.max_requests, thread_name_prefix="autoembed"))
            futures: dict[Future[Any], tuple[int, int]] = {}

            def submit(lo: int, hi: int) -> None:
                futures[pool.submit(provider.embed, inputs[lo:hi])] = (lo, hi)

            for lo, hi in chunk_inputs(inputs, max_inputs=max_inputs, max_tokens=provider.max_request_tokens):
                submit(lo, hi)
            while futures:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = wait(list(futures), timeout=timeout, return_when=FIRST_COMPLETED)
                if not done:  # time budget spent: drop what has not started
                    for fut in [f for f in futures if f.cancel()]:
                        lo, hi = futures.pop(fut)
                        for i in range(lo, hi):
                            errors[texts[i]] = ProviderError("time budget spent before this job was reached")
                    deadline = None
                    continue
                for fut in done:
                    lo, hi = futures.pop(fut)
                    requests += 1
                    try:
                        matrix = as_matrix(fut.result(), hi - lo, dims, provider.name)
                    except DimensionMismatch as exc:
                        for i in range(lo, hi):
                            errors[texts[i]] = exc
                    except ProviderError as exc:
                        if not exc.retryable and hi - lo > 1:
                            mid = (lo + hi) // 2
                            submit(lo, mid)
                            submit(mid, hi)
                        else:
                            for i in range(lo, hi):
                                errors[texts[i]] = exc
                    except Exception as exc:  # a custom provider's own exception
                        wrapped = ProviderError(f"provider {provider.name!r} failed: {exc!r}")
                        for i in range(lo, hi):
                            errors[texts[i]] = wrapped
                    else:
                        vectors[lo:hi] = list(matrix)
                        # NaN, infinities or values past halfvec's range: pgvector would
                        # refuse the whole UPDATE, so such a row fails alone, here.
                        for bad in np.flatnonzero(~(np.abs(matrix) <= limit).all(axis=1)):
                            errors[texts[lo + int(bad)]] = ProviderError(
                                f"Provider {provider.name!r} returned a vector with NaN, infinite or "
                                f"out-of-range values (beyond ±{limit:g} for a {column_type} column); "
                                "pgvector cannot store it. Check the provider or model for this input.",
                                retryable=False,
                            )
        return vectors, errors, requests

    def _write(self, config: EmbeddingConfig, names: dict[str, sql.Composable],
               writes: dict[Any, tuple[str, np.ndarray | None]]) -> tuple[set[Any], set[Any]]:
        """Store vectors where the text is unchanged. Returns (written, busy) keys."""
        if not writes:
            return set(), set()
        raw = self._raw()
        adapt(raw)
        pks = list(writes)
        # A server-side-binding cursor: vectors travel as binary, not as text literals.
        with psycopg.Cursor(raw) as cur:
            # Lock what is free and leave the rest: waiting on rows an application
            # transaction holds is how a bulk_update and the worker deadlock.
            cur.execute(
                sql.SQL("select t.{pk} from {table} t where t.{pk} = any(%s::{pktype}[]) "
                        "for update of t skip locked").format(**names),
                [pks],
            )
            locked = [r[0] for r in cur.fetchall()]
            missing = set(pks) - set(locked)
            busy: set[Any] = set()
            if missing:
                cur.execute(
                    sql.SQL("select t.{pk} from {table} t where t.{pk} = any(%s::{pktype}[])").format(**names),
                    [list(missing)],
                )
                busy = {r[0] for r in cur.fetchall()}
            if not locked:
                return set(), busy
            # Rows with a vector first, then those whose content is empty (NULL vector).
            rows = [(pk, vector) for pk in locked if (vector := writes[pk][1]) is not None]
            order = [pk for pk, _ in rows] + [pk for pk in locked if writes[pk][1] is None]
            matrix = np.stack([vector for _, vector in rows]) if rows else np.empty((0, 0), np.float32)
            cur.execute(
                sql.SQL(
                    "update {table} t set {col} = v.vec "
                    "from unnest(%s::{pktype}[], %s::text[], %b::{vectype}[]) as v(pk, body, vec) "
                    "where t.{pk} = v.pk and {fn}(t) is not distinct from v.body "
                    "returning t.{pk}"
                ).format(**names),
                [order, [writes[pk][0] for pk in order],
                 VectorArray(matrix, len(order) - len(rows), vector_type(config))],
            )
            return {r[0] for r in cur.fetchall()}, busy

    # -- acknowledgement ------------------------------------------------------

    def _acknowledge(self, messages: list[Message], rows: list[_Row], result: BatchResult) -> None:
        """Delete, archive, delay or split each message by its rows' outcomes."""
        from .deadletter import record_failures

        max_attempts = int(conf.get("MAX_ATTEMPTS"))
        delete: list[int] = []
        archive: list[int] = []
        delays: dict[int, list[int]] = {}
        resend: list[tuple[dict[str, Any], int]] = []
        dead: list[tuple[_Row, int]] = []
        by_message: dict[int, list[_Row]] = {}
        for row in rows:
            by_message.setdefault(id(row.message), []).append(row)
        for message in messages:
            mine = by_message.get(id(message), [])
            failed = [r for r in mine if r.outcome and r.outcome.kind == "failed"]
            busy = [r for r in mine if r.outcome and r.outcome.kind == "busy"]
            if not failed and not busy:
                delete.append(message.msg_id)
                continue
            attempts = message.attempts  # this read included
            doomed = failed if attempts >= max_attempts else []
            dead.extend((r, attempts) for r in doomed)
            retry = [r for r in failed if r not in doomed]
            if retry and len(retry) == len(mine):  # the next read of this message counts the next attempt
                delays.setdefault(self._delay(attempts, failed), []).append(message.msg_id)
                continue
            if retry:
                resend.append((self._body(message, retry, attempts), self._delay(attempts, failed)))
            if busy:  # a row locked by the application is no failure: this read does not count
                resend.append((self._body(message, busy, attempts - 1), BUSY_RETRY_SECONDS))
            (archive if doomed else delete).append(message.msg_id)
        with self._raw().cursor() as cur:
            queue.delete(cur, delete)
            queue.archive(cur, archive)
            for seconds, ids in delays.items():
                queue.set_vt(cur, ids, seconds)
            for body, seconds in resend:
                queue.send_batch(cur, [body], seconds)
        if dead:
            record_failures(dead)
            result.dead += len(dead)

    @staticmethod
    def _body(message: Message, rows: list[_Row], attempts: int) -> dict[str, Any]:
        """A new message for some of ``message``'s rows, carrying the attempts they have used."""
        body = {k: v for k, v in message.body.items() if k not in ("id", "ids", "attempts")}
        keys = [r.raw_pk for r in rows]
        body.update({"id": keys[0]} if len(keys) == 1 else {"ids": keys})
        body["attempts"] = max(0, attempts)
        return body

    @staticmethod
    def _delay(attempts: int, failed: list[_Row]) -> int:
        base = float(conf.get("RETRY_BACKOFF"))
        delay = min(base * 2 ** max(0, attempts - 1), float(conf.get("RETRY_BACKOFF_MAX")))
        hinted = [r.outcome.retry_after for r in failed if r.outcome and r.outcome.retry_after]
        return int(max([delay, *hinted]) + 0.999)
