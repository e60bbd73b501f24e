"""Batches filled across reads: what the backfill's jobs need embedded, gathered per config
until a batch is as large as the provider and the enqueued-token budget allow, or old
enough to go (pure: the worker's lanes share one ``Filler`` under its lock)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pipeline.target import Resolved
    from ..queue import Message

# The Batch API's limits on one batch of embeddings (OpenAI's: 50,000 inputs over all its
# request lines, 50,000 lines, a 200 MB input file). Lines never outnumber inputs.
MAX_INPUTS = 50_000
MAX_FILE_BYTES = 200_000_000
# What a request line costs in the file beyond its texts (custom_id, url, model...),
# counted for each text (a line holds one or many).
LINE_OVERHEAD = 200
# A batch being filled goes once its first job has waited this long (a backfill's reads
# fill one in seconds; a trickle of backfill jobs is not kept waiting for more).
MAX_AGE = 20.0
# A batch this full of its token room goes at once (the next job would rarely fit).
FULL_SHARE = 0.98


# (the vector store's key of a text, what to send, its tokens)
Input = tuple[bytes, str, int]


@dataclass
class Wanted:
    """One message of a config's backfill and, per row it names (in its order), the texts
    to embed that no process has a vector for: (the vector store's key, what to send, its
    tokens)."""

    message: Message
    rows: list[list[Input]]


@dataclass
class Filling:
    """The batch being filled for one config."""

    target: Resolved
    tokens_room: int  # at most this many tokens (the room the budget gave when it began)
    messages: dict[int, Message] = field(default_factory=dict)
    inputs: dict[bytes, str] = field(default_factory=dict)  # store key: text, in order
    tokens: int = 0
    size: int = 0  # bytes of its texts
    started: float = field(default_factory=time.monotonic)
    full: bool = False

    @property
    def model(self) -> str:
        return str(self.target.provider.model)

    def due(self, now: float) -> bool:
        return bool(self.messages) and (self.full or now - self.started >= MAX_AGE)


@dataclass
class Taken:
    """What ``Filler.add`` did with a config's messages."""

    accepted: list[Message] = field(default_factory=list)
    # Messages no batch has room for now (they wait, unspent).
    refused: list[Message] = field(default_factory=list)
    # Messages larger than any batch may be: (the message, how many of its leading rows the
    # empty batch being filled holds), to be split.
    split: list[tuple[Message, int]] = field(default_factory=list)
    # Messages whose first row alone is larger than any batch may be.
    too_large: list[Message] = field(default_factory=list)


class Filler:
    """The batches a worker is filling, one per config."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fills: dict[str, Filling] = {}

    def __bool__(self) -> bool:
        return bool(self._fills)

    def has_room(self, label: str) -> bool:
        """Whether a batch is being filled for config ``label`` and may take more."""
        with self._lock:
            fill = self._fills.get(label)
            return fill is not None and not fill.full

    def pending_tokens(self, model: str) -> int:
        """Tokens this worker is gathering for ``model`` (not yet counted in Postgres)."""
        with self._lock:
            return sum(f.tokens for f in self._fills.values() if f.model == model)

    def add(self, target: Resolved, wanted: list[Wanted], room: int, cap: int) -> Taken:
        """Add the messages that fit the batch being filled for ``target`` (begun with
        ``room`` tokens if there is none; ``cap``: the most tokens any batch may hold): each
        takes the texts it needs that the batch does not hold yet. A message that fits no
        batch is split; one that fits a batch, but not this one, waits."""
        taken = Taken()
        label = target.config.label
        with self._lock:
            fill = self._fills.get(label)
            if fill is None and room > 0:
                fill = self._fills[label] = Filling(target, room)
            for item in wanted:
                if fill is None or fill.full:
                    taken.refused.append(item.message)
                    continue
                new = _new_inputs(fill, item.rows)
                tokens = sum(n for _, _, n in new)
                size = sum(input_bytes(text) for _, text, _ in new)
                if _fits(fill, len(new), tokens, size):
                    _take(fill, item.message, new, tokens, size)
                    taken.accepted.append(item.message)
                elif _leading_rows(item.rows, cap) == 0:
                    taken.too_large.append(item.message)
                elif _leading_rows(item.rows, cap) < len(item.rows) and not fill.messages:
                    keep = _leading_rows(item.rows, fill.tokens_room)
                    if keep:
                        taken.split.append((item.message, keep))
                    else:
                        taken.refused.append(item.message)
                else:  # it fits a batch, not this one: the next
                    fill.full = bool(fill.messages)
                    taken.refused.append(item.message)
            if fill is not None:
                if fill.tokens >= fill.tokens_room * FULL_SHARE or len(fill.inputs) >= MAX_INPUTS:
                    fill.full = True
                if not fill.messages:
                    del self._fills[label]
        return taken

    def take_due(self, *, everything: bool = False) -> list[Filling]:
        """The batches to submit now (full or old enough; ``everything``: all of them),
        taken out of the filler."""
        now = time.monotonic()
        with self._lock:
            due = [k for k, f in self._fills.items() if everything or f.due(now)]
            return [self._fills.pop(k) for k in due]


def _new_inputs(fill: Filling, rows: list[list[Input]]) -> list[Input]:
    seen: dict[bytes, Input] = {}
    for inputs in rows:
        for item in inputs:
            if item[0] not in fill.inputs:
                seen.setdefault(item[0], item)
    return list(seen.values())


def _fits(fill: Filling, inputs: int, tokens: int, size: int) -> bool:
    return (
        fill.tokens + tokens <= fill.tokens_room
        and len(fill.inputs) + inputs <= MAX_INPUTS
        and fill.size + size <= MAX_FILE_BYTES
    )


def _take(fill: Filling, message: Message, new: list[Input], tokens: int, size: int) -> None:
    fill.messages[message.msg_id] = message
    fill.inputs.update((key, text) for key, text, _ in new)
    fill.tokens += tokens
    fill.size += size


def _leading_rows(rows: list[list[Input]], tokens_room: int) -> int:
    """How many of a message's leading rows an empty batch of ``tokens_room`` tokens holds."""
    keys: set[bytes] = set()
    tokens = size = 0
    for n, inputs in enumerate(rows):
        new = [item for item in inputs if item[0] not in keys]
        tokens += sum(c for _, _, c in new)
        size += sum(input_bytes(t) for _, t, _ in new)
        keys.update(k for k, _, _ in new)
        if tokens > tokens_room or len(keys) > MAX_INPUTS or size > MAX_FILE_BYTES:
            return n
    return len(rows)


def input_bytes(text: str) -> int:
    """What a text adds to the batch's file: as JSON escapes it (``\\uXXXX`` for each
    non-ASCII character, as the provider writes it), and its share of the line."""
    return len(json.dumps(text)) + LINE_OVERHEAD
