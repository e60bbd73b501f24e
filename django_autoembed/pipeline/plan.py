"""Chunk plans: how a row's stored chunks become the chunks of its text now.

A plan is made when the batch reads its rows (which chunks stay, move or go,
and which texts are new, to embed), and made again under the row's lock when
the batch writes, against the chunks stored then: two lanes that planned from
the same old chunks must not each insert the new ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from django.utils.module_loading import import_string

from .. import chunking, db, splitpool
from ..chunking import ChunkPlan, plan_chunks
from ..exceptions import InvalidValue
from .target import Resolved

Stored = dict[Any, list[tuple[int, int, str]]]  # row key -> (chunk id, number, text)


def stored_chunks(cur: Any, target: Resolved, pks: list[Any]) -> Stored:
    """The chunks stored for these rows."""
    stored: Stored = {}
    cur.execute(target.query("read_chunks"), [pks])
    for chunk_id, parent, number, text in cur.fetchall():
        stored.setdefault(parent, []).append((chunk_id, number, text))
    return stored


def chunk_plans(
    using: str, target: Resolved, contents: dict[Any, str]
) -> tuple[dict[Any, ChunkPlan], dict[str, str]]:
    """Per row, which of its stored chunks stay, move or go, and which texts are new; and, by
    text, why a custom splitter could not split it (those rows get no plan)."""
    with psycopg.Cursor(db.raw(using)) as cur:
        stored = stored_chunks(cur, target, list(contents))
    splits, unsplit = split_texts(target, [text for text in set(contents.values()) if text])
    plans = {
        pk: plan_chunks(stored.get(pk, []), splits.get(text, []))
        for pk, text in contents.items()
        if text not in unsplit
    }
    return plans, unsplit


def split_texts(target: Resolved, texts: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each text's chunks; and, by text, why a custom splitter failed on it."""
    unsplit: dict[str, str] = {}
    if not target.config.splitter:  # ours: in a pool of processes, the texts are long
        splits = splitpool.split_all(
            texts,
            size=chunk_size(target),
            overlap=target.config.chunk_overlap,
            tokenizer=target.provider.process_tokenizer(),
            joins_at_spaces=target.provider.splits_at_spaces(),
            here=lambda text: split(target, text),
        )
        return splits, unsplit
    splits = {}  # the user's code: it runs here, where Django is set up
    for text in texts:
        try:
            splits[text] = split(target, text)
        except Exception as exc:  # one text it cannot split fails its rows, not the batch
            unsplit[text] = (
                f"the splitter {target.config.splitter} failed: {exc!r}. Fix it (it must "
                "return a list of strings, with no NUL characters); the row is retried, and "
                "dead-lettered once its attempts are spent."
            )
    return splits, unsplit


def chunk_size(target: Resolved) -> int:
    return min(int(target.config.chunk_tokens or 0), target.provider.max_input_tokens)


def split(target: Resolved, text: str) -> list[str]:
    """One text's chunks, by the config's splitter or ours."""
    config, provider = target.config, target.provider
    size = chunk_size(target)
    if not config.splitter:
        return chunking.split(
            text,
            size=size,
            overlap=config.chunk_overlap,
            count=provider.count_tokens,
            cut=provider.head,
            joins_at_spaces=provider.splits_at_spaces(),
        )
    chunks = import_string(config.splitter)(text, size, config.chunk_overlap, provider.count_tokens)
    if isinstance(chunks, str) or not isinstance(chunks, Iterable):
        raise InvalidValue(f"it returned {type(chunks).__name__}, not a list of strings")
    chunks = list(chunks)
    for c in chunks:
        if not isinstance(c, str):
            raise InvalidValue(f"it returned a {type(c).__name__} among the chunks")
        if "\x00" in c:  # Postgres's text cannot hold NUL
            raise InvalidValue("a chunk holds a NUL character")
        c.encode()  # a lone surrogate: UnicodeEncodeError, with its position
    return [c for c in chunks if c.strip()]


def replan(
    cur: Any,
    target: Resolved,
    pks: list[Any],
    ready: dict[Any, ChunkPlan],
    has_vector: Any,
) -> tuple[dict[Any, ChunkPlan], set[Any]]:
    """Each locked row's plan made again from its chunks as stored now; and the rows to try
    again soon, no attempt spent: those whose new plan needs a text this batch has no vector
    for (``has_vector(text)``), and those with a chunk another transaction holds (deleting
    the row: Django deletes its chunks first, and waiting for them would deadlock with it)."""
    stored: Stored = {}
    locked: set[int] = set()
    if pks:
        stored = stored_chunks(cur, target, pks)
        cur.execute(target.query("lock_chunks"), [pks])
        locked = {r[0] for r in cur.fetchall()}
    plans: dict[Any, ChunkPlan] = {}
    stale: set[Any] = set()
    for pk in pks:
        mine = stored.get(pk, [])
        plan = plan_chunks(mine, ready[pk].texts)
        held = any(chunk_id not in locked for chunk_id, _, _ in mine)
        if not held and all(has_vector(text) for _, text in plan.add):
            plans[pk] = plan
        else:
            stale.add(pk)
    return plans, stale
