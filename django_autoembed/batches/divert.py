"""Which jobs a Batch API worker sends to batches: the backfill's, for the texts no
process has a vector for yet. A trigger's job (a row a user wrote) and a job back from
a batch go through the embeddings API, at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from django.db import ProgrammingError, transaction

from .. import changes, db, identity
from ..exceptions import ModelChanged
from ..pipeline.destinations import destination
from ..pipeline.embed import Embedded
from ..pipeline.read import expand, read_texts
from ..pipeline.run import by_config
from .filling import Input, Wanted

if TYPE_CHECKING:
    from ..pipeline import Processor
    from ..pipeline.target import Resolved
    from ..queue import Message


@dataclass
class Split:
    """The backfill's jobs per config that need texts embedded, and the jobs to process now."""

    wanted: dict[str, tuple[Resolved, list[Wanted]]]
    now: list[Message]


def for_batches(message: Message) -> bool:
    """Whether a job may wait for a batch: the backfill queued it, and it is not back from
    one (what a batch did not embed is the embeddings API's)."""
    return message.from_backfill and message.from_batch is None


def split_for_batches(processor: Processor, messages: list[Message]) -> Split:
    """Per config, the messages whose rows need texts no process has a vector for, with
    those texts per row; and the messages to process now (their texts are all known, they
    match no config, or they may not wait for a batch). Writes nothing."""
    rows = [row for m in messages if for_batches(m) for row in expand(m, processor.targets, None)]
    found: dict[str, tuple[Resolved, list[Wanted]]] = {}
    waiting: set[int] = set()
    for label, (config, group) in by_config(rows).items():
        try:  # a changed model is refused by the processing, before anything is paid for
            identity.verify(processor.using, config)
        except ModelChanged:
            continue
        target = processor.targets.resolve(config)
        try:
            with transaction.atomic(using=processor.using):  # a refusal ends no transaction
                needed = _unknown_inputs(processor, target, group)
        except (ProgrammingError, psycopg.errors.InsufficientPrivilege) as exc:
            if changes.privilege_refused(exc) is None:
                raise
            continue  # a grant missing: the processing pauses the config, its jobs unspent
        by_message: dict[int, Message] = {}
        for row in group:
            if needed.get((row.message.msg_id, str(row.raw_pk))):
                by_message[row.message.msg_id] = row.message
        if by_message:
            wanted = [
                Wanted(m, [needed.get((m.msg_id, str(raw)), []) for raw in m.row_ids])
                for m in by_message.values()
            ]
            found[label] = (target, wanted)
            waiting.update(by_message)
    db.end_read(processor.using)
    return Split(found, [m for m in messages if m.msg_id not in waiting])


def _unknown_inputs(
    processor: Processor, target: Resolved, group: list[Any]
) -> dict[tuple[int, str], list[Input]]:
    """Per (message, row as named), the texts its row needs that no process has a vector
    for: (the vector store's key, what to send, its tokens)."""
    dest = destination(processor.using, target)
    contents, _broken = read_texts(processor.using, target, list({r.pk: None for r in group}))
    dest.prepare(contents)
    needs = dest.needs
    texts = sorted({t for ts in needs.values() for t in ts})
    inputs = processor.embedder.inputs(target, texts, Embedded())
    known = processor.embedder.known(target, inputs)
    unknown = set(known.missing)
    count = target.provider.count_tokens
    tokens = {t: count(inputs[t]) for t in unknown}
    out: dict[tuple[int, str], list[Input]] = {}
    for row in group:
        wanted = [t for t in needs.get(row.pk, ()) if t in unknown]
        if wanted:
            out[(row.message.msg_id, str(row.raw_pk))] = [
                (known.kept_keys[t], inputs[t], tokens[t]) for t in wanted
            ]
    return out
