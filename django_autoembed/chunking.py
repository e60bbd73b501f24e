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

from .exceptions import InvalidValue

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
        raise InvalidValue(f"chunk size must be a positive number of tokens, not {size!r}.")
    overlap = max(0, min(overlap, size // 2))
    pieces = _pieces(text.strip(), size - overlap, count, cut)
    chunks: list[str] = []
    tail, tail_tokens = "", 0  # the overlap the next chunk starts with
    start = 0
    while start < len(pieces):
        # Take pieces while their counts (and a token for every join) fit; the text is
        # then counted once, whole, and given back piece by piece in the rare case a
        # join made more tokens than that.
        used, end = tail_tokens, start
        while end < len(pieces):
            cost = pieces[end][1] + (1 if end > start or tail else 0)
            if end > start and used + cost > size:
                break
            used += cost
            end += 1
        while True:
            chunk = _compose(tail, pieces[start:end])
            if count(chunk) <= size:
                break
            if end - start > 1:
                end -= 1
            elif tail:
                tail = ""  # a piece alone always fits; with its overlap it may not
            else:
                break  # unreachable: every piece fits in size - overlap
        chunks.append(chunk)
        tail, tail_tokens = _tail(chunk, overlap, count)
        start = end
    return chunks


def _compose(tail: str, pieces: Sequence[tuple[str, int, bool]]) -> str:
    parts = [tail] if tail else []
    for piece, _tokens, starts_paragraph in pieces:
        if parts and starts_paragraph:
            parts.append("\n\n")
        parts.append(piece)
    return _join(parts)


def _pieces(
    text: str, room: int, count: Counter, cut: Callable[[str, int], str] | None
) -> list[tuple[str, int, bool]]:
    """(piece, tokens, starts a paragraph) in order, each piece at most ``room`` tokens."""
    out: list[tuple[str, int, bool]] = []
    for paragraph in (p.strip() for p in _PARAGRAPHS.split(text)):
        if not paragraph:
            continue
        first = True
        for piece, tokens in _fit(paragraph, room, count, cut, level=0):
            out.append((piece, tokens, first))
            first = False
    return out


def _fit(
    text: str,
    room: int,
    count: Counter,
    cut: Callable[[str, int], str] | None,
    level: int,
    tokens: int | None = None,
) -> list[tuple[str, int]]:
    """``text`` as (piece, tokens) of at most ``room`` tokens: whole, or by sentences,
    words, tokens."""
    if tokens is None:
        tokens = count(text)
    if tokens <= room:
        return [(text, tokens)]
    if level == 0:
        parts = [s for s in _SENTENCES.split(text) if s]
    elif level == 1:
        parts = _WORDS.findall(text)
    else:
        return [(head, count(head)) for head in _cut_word(text, room, count, cut)]
    if len(parts) <= 1:
        return _fit(text, room, count, cut, level + 1, tokens)
    out: list[tuple[str, int]] = []
    for part in parts:
        out.extend(_fit(part, room, count, cut, level + 1))
    return _pack(out, room, count, " " if level == 0 else "")


def _pack(
    parts: list[tuple[str, int]], room: int, count: Counter, joiner: str
) -> list[tuple[str, int]]:
    """Consecutive parts joined while they fit in ``room`` tokens (counted as above)."""
    out: list[tuple[str, int]] = []
    group: list[tuple[str, int]] = []
    used = 0
    for part, tokens in parts:
        cost = tokens + (1 if group else 0)
        if group and used + cost > room:
            out.extend(_joined(group, room, count, joiner))
            group, used, cost = [], 0, tokens
        group.append((part, tokens))
        used += cost
    if group:
        out.extend(_joined(group, room, count, joiner))
    return out


def _joined(
    group: list[tuple[str, int]], room: int, count: Counter, joiner: str
) -> list[tuple[str, int]]:
    """``group`` joined into one piece, or into more where the joined text is over ``room``."""
    if len(group) == 1:
        return group
    text = joiner.join(part for part, _ in group)
    tokens = count(text)
    if tokens <= room:
        return [(text, tokens)]
    return _joined(group[:-1], room, count, joiner) + group[-1:]


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


def _tail(text: str, overlap: int, count: Counter) -> tuple[str, int]:
    """The last sentences of ``text`` that fit in ``overlap`` tokens ("" if none, or 0),
    and their tokens."""
    if overlap <= 0:
        return "", 0
    # A token is rarely over 16 characters: the overlap lies within the text's end.
    end = text[-overlap * 16 :].replace("\n\n", " ")
    sentences = [s for s in _SENTENCES.split(end) if s.strip()]
    if len(end) < len(text):
        sentences = sentences[1:]  # the first may be the end of a sentence cut above
    kept: list[str] = []
    used = 0
    for sentence in reversed(sentences):
        tokens = count(sentence)
        if used + tokens > overlap:
            break
        kept.insert(0, sentence)
        used += tokens
    while kept:
        tail = " ".join(kept)
        tokens = count(tail)
        if tokens <= overlap:
            return tail, tokens
        kept.pop(0)  # the joins made more tokens than the sentences alone
    return "", 0


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
