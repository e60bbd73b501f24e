"""Splitting a batch's long texts in a pool of processes.

Counting tokens is most of the CPU a backlog of long documents costs (each text is
tokenized about once and a half over while it is split, two and a half times with a
tokenizer that does not join at spaces), and in the worker's own
process it gets one core at most: the tokenizer gives up the GIL for each call and then
waits for it behind the threads handling requests. A batch whose texts add up to
``MIN_CHARS`` or more is split in ``CHUNK_PROCESSES`` processes instead, started once per
process (``spawn``: nothing of the parent's connections or threads comes along) and
kept. Each child loads only the provider's tokenizer, by name.

The chunks are the same either way: the children run ``chunking.split`` with the same
counter. A pool that breaks (a child killed) is dropped with a warning and the batch is
split in-process; the next large batch starts a new pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import cache
from itertools import repeat
from typing import Any

from django.utils.module_loading import import_string

from . import chunking, settings

logger = logging.getLogger(__name__)

# Below this many characters in a batch, splitting in-process costs less than shipping.
MIN_CHARS = 200_000

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_size = 0


def processes() -> int:
    """How many processes split long texts (``CHUNK_PROCESSES``; None: one per core)."""
    value = settings.current().chunk_processes
    return int(os.cpu_count() or 1) if value is None else int(value)


def split_all(
    texts: Sequence[str],
    *,
    size: int,
    overlap: int,
    tokenizer: tuple[str, str] | None,
    joins_at_spaces: bool = False,
    here: Callable[[str], list[str]],
) -> dict[str, list[str]]:
    """Each text's chunks: in the pool when it pays, else with ``here`` (in this process)."""
    wanted = processes()
    if tokenizer is None or wanted < 2 or len(texts) < 2 or sum(map(len, texts)) < MIN_CHARS:
        return {text: here(text) for text in texts}
    pool = _get(wanted)
    try:
        chunks = pool.map(
            _split, texts, repeat(size), repeat(overlap), repeat(tokenizer), repeat(joins_at_spaces)
        )
        return dict(zip(texts, chunks, strict=True))
    except BrokenProcessPool as exc:
        logger.warning(
            "The pool of splitting processes broke (%s); splitting this batch in the "
            "worker's own process. A child killed for memory? Lower CHUNK_PROCESSES.",
            exc,
        )
        _drop(pool)
        return {text: here(text) for text in texts}
    except RuntimeError:
        # Shut down by another lane (CHUNK_PROCESSES changed) between _get and map.
        _drop(pool)
        return {text: here(text) for text in texts}


def _get(wanted: int) -> ProcessPoolExecutor:
    global _pool, _size
    with _lock:
        if _pool is None or _size != wanted:
            if _pool is not None:
                # Another lane may be mid-map on the old pool: its work still finishes.
                _pool.shutdown(wait=False)
            _pool = ProcessPoolExecutor(wanted, mp_context=multiprocessing.get_context("spawn"))
            _size = wanted
        return _pool


def _drop(pool: ProcessPoolExecutor | None = None) -> None:
    """Forget the pool (only ``pool``, if given: a lane that saw it break)."""
    global _pool
    with _lock:
        if _pool is None or (pool is not None and _pool is not pool):
            return
        _pool.shutdown(wait=False)
        _pool = None


def shutdown() -> None:
    """Stop the pool's processes (the worker, on its way out; tests)."""
    _drop()


@cache
def _functions(tokenizer: tuple[str, str]) -> tuple[Any, Any]:
    count, head = tokenizer
    return import_string(count), import_string(head)


def _split(
    text: str, size: int, overlap: int, tokenizer: tuple[str, str], joins_at_spaces: bool
) -> list[str]:
    """In a child: the built-in splitter with the provider's counter, loaded by name."""
    count, head = _functions(tokenizer)
    return chunking.split(
        text, size=size, overlap=overlap, count=count, cut=head, joins_at_spaces=joins_at_spaces
    )
