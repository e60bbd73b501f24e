"""Splitting long texts into token-bounded chunks, and matching chunks across text versions.

A chunk is a run of whole paragraphs when they fit; a paragraph longer than a chunk is
split by sentences, and a sentence longer than a chunk by words (and a word longer than
a chunk by tokens). Each chunk after the first starts with up to ``overlap`` tokens of
the sentences that end the chunk before it, so a passage cut at a boundary is still
found. Chunks are made greedily from the start, paragraph by paragraph, so an edit moves
only the boundaries of the chunks it touches: re-embedding after an edit costs the
chunks whose text changed, and ``plan_chunks`` finds which those are.

Pure functions: no database, no provider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Counter = Callable[[str], int]

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
_WORDS = re.compile(r"\S+\s*")


def split(
    text: str,
    *,
    size: int,
    overlap: int,
    count: Counter,
    cut: Callable[[str, int], str] | None = None,
) -> list[str]:
    """Chunks of ``text`` of at most ``size`` tokens each (as ``count`` counts them).

    Args:
        size: most tokens in a chunk, its overlap included.
        overlap: most tokens a chunk repeats from the end of the one before.
        count: the provider's token counter for one text.
        cut: the provider's "first n tokens of a text", for a word longer than a chunk
            (without one, such a word is cut by characters).
    """
    if size <= 0:
        raise ValueError("chunk size must be positive")
    overlap = max(0, min(overlap, size // 2))
    pieces = _pieces(text.strip(), size - overlap, count, cut)
    chunks: list[str] = []
    current: list[str] = []  # the chunk being made: the overlap first, then its own pieces
    used = 0
    fresh = 0  # pieces of its own (beyond the overlap)
    for piece, tokens, starts_paragraph in pieces:
        if fresh and used + tokens > size:
            chunks.append(_join(current))
            tail = _tail(current, overlap, count)
            current, used, fresh = list(tail), sum(count(t) for t in tail), 0
        if current and starts_paragraph:
            current.append("\n\n")
        current.append(piece)
        used += tokens
        fresh += 1
    if fresh:
        chunks.append(_join(current))
    return chunks


def _pieces(
    text: str, room: int, count: Counter, cut: Callable[[str, int], str] | None
) -> list[tuple[str, int, bool]]:
    """(piece, tokens, starts a paragraph) in order, each piece at most ``room`` tokens."""
    out: list[tuple[str, int, bool]] = []
    for paragraph in (p.strip() for p in _PARAGRAPHS.split(text)):
        if not paragraph:
            continue
        first = True
        for piece in _fit(paragraph, room, count, cut, level=0):
            out.append((piece, count(piece), first))
            first = False
    return out


def _fit(
    text: str, room: int, count: Counter, cut: Callable[[str, int], str] | None, level: int
) -> list[str]:
    """``text`` as pieces of at most ``room`` tokens: whole, or by sentences, words, tokens."""
    if count(text) <= room:
        return [text]
    if level == 0:
        parts = [s for s in _SENTENCES.split(text) if s]
    elif level == 1:
        parts = _WORDS.findall(text)
    else:
        return _cut_word(text, room, count, cut)
    if len(parts) <= 1:
        return _fit(text, room, count, cut, level + 1)
    out: list[str] = []
    for part in parts:
        out.extend(_fit(part, room, count, cut, level + 1))
    return _pack(out, room, count, " " if level == 0 else "")


def _pack(parts: list[str], room: int, count: Counter, joiner: str) -> list[str]:
    """Consecutive parts joined while they fit in ``room`` tokens."""
    out: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{joiner}{part}" if current else part
        if current and count(candidate) > room:
            out.append(current)
            current = part
        else:
            current = candidate
    if current:
        out.append(current)
    return out


def _cut_word(
    text: str, room: int, count: Counter, cut: Callable[[str, int], str] | None
) -> list[str]:
    out = []
    while text:
        head = cut(text, room) if cut else _cut_chars(text, room, count)
        if not head:
            head = text[:1]
        out.append(head)
        text = text[len(head) :]
    return out


def _cut_chars(text: str, room: int, count: Counter) -> str:
    lo, hi = 1, len(text)
    while lo < hi:  # the longest prefix within room
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def _tail(parts: list[str], overlap: int, count: Counter) -> list[str]:
    """The last sentences of ``parts`` that fit in ``overlap`` tokens (none if 0)."""
    if overlap <= 0:
        return []
    text = _join(parts)
    sentences = [s for s in _SENTENCES.split(text.replace("\n\n", " ")) if s.strip()]
    kept: list[str] = []
    used = 0
    for sentence in reversed(sentences):
        tokens = count(sentence)
        if used + tokens > overlap:
            break
        kept.insert(0, sentence)
        used += tokens
    return [" ".join(kept)] if kept else []


def _join(parts: Sequence[str]) -> str:
    out = ""
    for part in parts:
        if part == "\n\n":
            out = out.rstrip() + "\n\n"
        elif out and not out.endswith(("\n\n", " ")):
            out += " " + part
        else:
            out += part
    return out.strip()


@dataclass
class ChunkPlan:
    """How a parent's stored chunks become the chunks of its new text.

    ``keep`` maps stored chunk ids to their new numbers (same text: the vector stays);
    ``add`` is (number, text) of chunks to embed and insert; ``drop`` the stored chunk
    ids whose text is gone.
    """

    keep: dict[int, int] = field(default_factory=dict)
    add: list[tuple[int, str]] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)


def plan_chunks(stored: Sequence[tuple[int, int, str]], new: Sequence[str]) -> ChunkPlan:
    """Match stored chunks ``(id, number, text)`` to ``new`` chunk texts, by text."""
    plan = ChunkPlan()
    free: dict[str, list[int]] = {}
    for chunk_id, _number, text in sorted(stored, key=lambda s: s[1]):
        free.setdefault(text, []).append(chunk_id)
    for number, text in enumerate(new):
        ids = free.get(text)
        if ids:
            plan.keep[ids.pop(0)] = number
        else:
            plan.add.append((number, text))
    plan.drop = [i for ids in free.values() for i in ids]
    return plan
