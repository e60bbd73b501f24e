"""Embedding a batch's texts: recently embedded ones from memory or the vector store, the
rest from the provider, many inputs a request and several requests in flight."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import providers, settings, store, usage
from ..cache import VectorLRU, provider_key
from ..exceptions import ErrorKind, PauseKind, ProcessingPaused, ProviderError
from ..providers.base import chunk_inputs
from ..vectors import precision
from .fanout import FanOut, send
from .pacing import Paced
from .target import Resolved

# Texts this process embedded lately, per provider/model/dimensions/column type.
recent_vectors = VectorLRU(lambda: settings.current().recent_vectors)


@dataclass
class Embedded:
    """What a batch got for its unique texts, by text."""

    vectors: dict[str, np.ndarray | None] = field(default_factory=dict)
    errors: dict[str, ProviderError] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)  # never sent: the time budget ran out
    too_long: dict[str, int] = field(default_factory=dict)  # over the per-input limit: tokens
    requests: int = 0
    answers: int = 0  # requests the provider answered with vectors

    def vector(self, text: str) -> np.ndarray:
        vector = self.vectors[text]
        assert vector is not None, "a text without a vector is not written"
        return vector


@dataclass(frozen=True)
class Known:
    """What is known of a batch's inputs before any request: the vectors found by memory
    key, and the texts nobody has a vector for."""

    keys: dict[str, Any]  # text -> this process's memory key
    kept_keys: dict[str, bytes]  # text -> the vector store's key (texts not in memory)
    vectors: dict[Any, np.ndarray]
    missing: list[str]


class Embedder:
    """Sends a database's batches to their providers (``pool``: the request threads a
    worker's lanes share; without it each batch makes its own, ``max_requests`` wide)."""

    def __init__(
        self,
        using: str,
        *,
        batch_size: int,
        max_requests: int,
        pool: ThreadPoolExecutor | None,
        max_wait: float,
        stopping: Callable[[], bool] | None,
        charge_outages: bool,
    ) -> None:
        self.using = using
        self.batch_size = batch_size
        self.max_requests = max_requests
        self.pool = pool
        self.max_wait = max_wait
        self.stopping = stopping
        self.charge_outages = charge_outages

    def embed(self, target: Resolved, texts: list[str], deadline: float | None) -> Embedded:
        """Vectors for unique texts: known ones from memory or the store, the rest requested.

        A row queued twice (edited again before the worker read it), or put back because
        the application held its lock, comes back with a text embedded moments ago; its
        vector is reused instead of paying for it again. A text over the model's per-input
        limit is cut at the limit or refused, as the config says, before any request.

        Raises:
            ProcessingPaused: the provider refused its configuration, or every request
                failed in passing (an outage); the vectors it did send are kept all the same.
        """
        out = Embedded()
        inputs = self.inputs(target, texts, out)
        known = self.known(target, inputs)
        fanout = self._send(target, [inputs[t] for t in known.missing], deadline)
        out.requests, out.answers = fanout.requests, fanout.answers
        out.vectors = {t: known.vectors.get(known.keys[t]) for t in inputs}
        out.skipped = {known.missing[n] for n in fanout.skipped}
        stored = precision(target.column_type)  # what the column keeps anyway
        remember = []
        for n, text in enumerate(known.missing):
            vector = fanout.vectors[n]
            out.vectors[text] = vector
            if n in fanout.errors:
                out.errors[text] = fanout.errors[n]
            elif vector is not None:
                remember.append((text, vector.astype(stored)))
        recent_vectors.put_many([(known.keys[t], v) for t, v in remember])
        if store.enabled():
            store.put_many(self.using, [(known.kept_keys[t], v) for t, v in remember], stored)
        self._record_usage(target, fanout)
        self._pause_if_down(target, fanout)
        return out

    def inputs(self, target: Resolved, texts: Iterable[str], out: Embedded) -> dict[str, str]:
        """What to send for each text: itself, or its start when it is over the per-input limit
        and the config truncates (``out`` learns of the long ones, and of those refused)."""
        config, provider = target.config, target.provider
        limit = provider.max_input_tokens
        inputs: dict[str, str] = {}
        for text in texts:
            tokens = provider.over_limit(text)
            if tokens is None:
                inputs[text] = text
                continue
            out.too_long[text] = tokens
            if config.too_long == "fail":
                out.errors[text] = ProviderError(
                    f"The text is {tokens} tokens, over the {limit} tokens a {provider.name} "
                    f"{provider.model} input may hold. Shorten it, or declare the config with "
                    "too_long='truncate' or chunk_tokens=... to embed it in chunks.",
                    kind=ErrorKind.INPUT,
                )
            else:
                inputs[text] = provider.head(text, limit)
        return inputs

    def known(self, target: Resolved, inputs: dict[str, str]) -> Known:
        """This process's recent vectors first, then those any process kept (or a batch
        brought); the texts nobody has a vector for."""
        stored = precision(target.column_type)
        scope = (*provider_key(target.config), target.column_type)
        keys = {t: (*scope, hashlib.blake2b(t.encode(), digest_size=16).digest()) for t in inputs}
        vectors = recent_vectors.get_many(keys.values())
        missing = [t for t in inputs if keys[t] not in vectors]
        kept_keys = {t: store.key(scope, t) for t in missing}
        kept = store.get_many(self.using, kept_keys.values(), stored)
        if kept:
            found = [(keys[t], kept[kept_keys[t]]) for t in missing if kept_keys[t] in kept]
            recent_vectors.put_many(found)
            vectors.update(found)
            missing = [t for t in missing if kept_keys[t] not in kept]
        return Known(keys, kept_keys, vectors, missing)

    def _send(self, target: Resolved, inputs: list[str], deadline: float | None) -> FanOut:
        provider = target.provider
        paced = Paced(
            self.using,
            provider,
            target.config,
            inputs,
            max_wait=self.max_wait,
            stopping=self.stopping,
        )
        fanout = FanOut(
            inputs,
            chunk_inputs(
                inputs,
                max_inputs=max(1, min(self.batch_size, provider.max_inputs)),
                max_tokens=paced.max_request_tokens(),
                estimate=paced.estimate(),
            ),
            dimensions=target.config.get_dimensions(),
            provider=provider.name,
            column_type=target.column_type,
        )
        if not inputs:
            return fanout
        with ExitStack() as stack:
            pool = self.pool or stack.enter_context(
                ThreadPoolExecutor(max_workers=self.max_requests, thread_name_prefix="autoembed")
            )
            if paced.paces:
                send(fanout, paced.request, pool, deadline, gate=paced.admit, heard=paced.heard)
            else:
                send(fanout, provider.request, pool, deadline)
        return fanout

    def _record_usage(self, target: Resolved, fanout: FanOut) -> None:
        if not fanout.answers:
            return
        provider = target.provider
        unbilled = sum(
            provider.count_tokens(t) for lo, hi in fanout.unbilled for t in fanout.texts[lo:hi]
        )
        usage.record(
            self.using,
            target.config.label,
            provider.model,
            requests=fanout.answers,
            inputs=fanout.answered_inputs,
            tokens=fanout.billed + unbilled,
        )

    def _pause_if_down(self, target: Resolved, fanout: FanOut) -> None:
        """Raise ProcessingPaused when the provider refused its configuration, or when every
        request failed in passing and it is not the rows' fault."""
        key = providers.pause_key(target.config)
        if fanout.config_error is not None:
            raise ProcessingPaused(fanout.config_error, provider=key)
        outage = fanout.unavailable
        if outage is None or self.charge_outages:
            return
        # Every request failed. Rate limits say nothing about the rows; server errors might
        # be about them: if the provider embeds a probe, they are to blame.
        transient = any(e.kind is ErrorKind.TRANSIENT for e in fanout.errors.values())
        if not (transient and providers.probe(target.config)):
            raise ProcessingPaused(outage, provider=key, kind=PauseKind.UNAVAILABLE)
