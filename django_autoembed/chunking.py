"""Splitting long texts into token-bounded chunks, and matching chunks across text versions.

A chunk is a run of whole paragraphs when they fit; a paragraph longer than a chunk is
split by sentences, and a sentence longer than a chunk by words (and a word longer than
a chunk by tokens). Each chunk after the first starts with up to ``overlap`` tokens of
the sentences that end the chunk before it, so a passage cut at a boundary is still
found. Chunks are made greedily from the start, paragraph by paragraph, so an edit moves
only the boundaries of the chunks it touches: re-embedding after an edit costs the
chunks whose text changed, and ``plan_chunks`` finds which those are.

Counting is most of a split's cost. With a tokenizer that never makes a token across a
space following a non-space character (cl100k_base's pre-tokenizer splits there), a text
joined from pieces whose counts are known is counted exactly by re-counting only the
words around each join (``count_joined``): each text is then tokenized about once, not
about two and a half times over.

Pure functions: no database, no provider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .exceptions import InvalidValue

Counter = Callable[[str], int]
# count(text) of a text made of these (piece, tokens) in order, and separators
Measure = Callable[[str, Sequence[tuple[str, int]]], int]

_PARAGRAPHS = re.compile(r"\n\s*\n")
# A sentence ends at a stop followed by white space (a CJK stop: by anything). The stop
# comes first in the pattern, not in a look-behind, so the regex engine skips to the stops
# instead of trying every position: twice as fast on prose (a text of little but stops
# is slower, and cheap either way next to counting its tokens).
_SENTENCE_END = re.compile(r"[.!?…]\s+|[。！？]\s*")
_WORDS = re.compile(r"\S+\s*")


def split(
    text: str,
    *,
    size: int,
    overlap: int,
    count: Counter,
    cut: Callable[[str, int], str] | None = None,
    joins_at_spaces: bool = False,
) -> list[str]:
    """Chunks of ``text`` of at most ``size`` tokens each (as ``count`` counts them).

    Args:
        size: most tokens in a chunk, its overlap included.
        overlap: most tokens a chunk repeats from the end of the one before.
        count: the provider's token counter for one text.
        cut: the provider's "first n tokens of a text", for a word longer than a chunk
            (without one, such a word is cut by characters).
        joins_at_spaces: ``count`` never makes a token across a space that follows a
            non-space character, so joined texts are counted by their joins alone (see
            ``count_joined``). The chunks are the same either way; only the work differs.
    """
    if size <= 0:
        raise InvalidValue(f"chunk size must be a positive number of tokens, not {size!r}.")
    overlap = max(0, min(overlap, size // 2))
    measure = _measure(count, joins_at_spaces)
    pieces = _pieces(text.strip(), size - overlap, count, cut, measure)
    return _chunks(pieces, size, overlap, count, measure)


def _measure(count: Counter, joins_at_spaces: bool) -> Measure:
    """How a text joined from counted pieces is counted: by its joins where ``count`` allows."""
    measure: Measure
    if joins_at_spaces:

        def measure(joined: str, parts: Sequence[tuple[str, int]]) -> int:
            return count_joined(joined, parts, count)

    else:

        def measure(joined: str, parts: Sequence[tuple[str, int]]) -> int:
            return count(joined)

    return measure


def _chunks(
    pieces: list[tuple[str, int, bool]], size: int, overlap: int, count: Counter, measure: Measure
) -> list[str]:
    """``pieces`` packed greedily into chunks of at most ``size`` tokens, each after the first
    starting with the overlap the one before ends with."""
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
            parts = [(tail, tail_tokens)] if tail else []
            if measure(chunk, parts + [(p, n) for p, n, _ in pieces[start:end]]) <= size:
                break
            if end - start > 1:
                end -= 1
            elif tail:
                tail = ""  # a piece alone always fits; with its overlap it may not
            else:
                break  # unreachable: every piece fits in size - overlap
        chunks.append(chunk)
        tail, tail_tokens = _tail(chunk, overlap, count, measure)
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
    text: str,
    room: int,
    count: Counter,
    cut: Callable[[str, int], str] | None,
    measure: Measure,
) -> list[tuple[str, int, bool]]:
    """(piece, tokens, starts a paragraph) in order, each piece at most ``room`` tokens."""
    out: list[tuple[str, int, bool]] = []
    for paragraph in (p.strip() for p in _PARAGRAPHS.split(text)):
        if not paragraph:
            continue
        first = True
        for piece, tokens in _fit(paragraph, room, count, cut, measure, level=0):
            out.append((piece, tokens, first))
            first = False
    return out


def _fit(
    text: str,
    room: int,
    count: Counter,
    cut: Callable[[str, int], str] | None,
    measure: Measure,
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
        parts = [s for s in _sentences(text) if s]
    elif level == 1:
        parts = _WORDS.findall(text)
    else:
        return [(head, count(head)) for head in _cut_word(text, room, count, cut)]
    if len(parts) <= 1:
        return _fit(text, room, count, cut, measure, level + 1, tokens)
    out: list[tuple[str, int]] = []
    for part in parts:
        out.extend(_fit(part, room, count, cut, measure, level + 1))
    return _pack(out, room, measure, " " if level == 0 else "")


def _sentences(text: str) -> list[str]:
    """``text`` cut after each sentence's stop, the white space between dropped."""
    out, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        out.append(text[start : end.start() + 1])
        start = end.end()
    out.append(text[start:])
    return out


def _pack(
    parts: list[tuple[str, int]], room: int, measure: Measure, joiner: str
) -> list[tuple[str, int]]:
    """Consecutive parts joined while they fit in ``room`` tokens (counted as above)."""
    out: list[tuple[str, int]] = []
    group: list[tuple[str, int]] = []
    used = 0
    for part, tokens in parts:
        cost = tokens + (1 if group else 0)
        if group and used + cost > room:
            out.extend(_joined(group, room, measure, joiner))
            group, used, cost = [], 0, tokens
        group.append((part, tokens))
        used += cost
    if group:
        out.extend(_joined(group, room, measure, joiner))
    return out


def _joined(
    group: list[tuple[str, int]], room: int, measure: Measure, joiner: str
) -> list[tuple[str, int]]:
    """``group`` joined into one piece, or into more where the joined text is over ``room``."""
    if len(group) == 1:
        return group
    text = joiner.join(part for part, _ in group)
    tokens = measure(text, group)
    if tokens <= room:
        return [(text, tokens)]
    return _joined(group[:-1], room, measure, joiner) + group[-1:]


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


def _tail(text: str, overlap: int, count: Counter, measure: Measure) -> tuple[str, int]:
    """The last sentences of ``text`` that fit in ``overlap`` tokens ("" if none, or 0),
    and their tokens."""
    if overlap <= 0:
        return "", 0
    # A token is rarely over 16 characters: the overlap lies within the text's end.
    end = text[-overlap * 16 :].replace("\n\n", " ")
    sentences = [s for s in _sentences(end) if s.strip()]
    if len(end) < len(text):
        sentences = sentences[1:]  # the first may be the end of a sentence cut above
    kept: list[tuple[str, int]] = []
    used = 0
    for sentence in reversed(sentences):
        tokens = count(sentence)
        if used + tokens > overlap:
            break
        kept.insert(0, (sentence, tokens))
        used += tokens
    while kept:
        tail = " ".join(sentence for sentence, _ in kept)
        tokens = measure(tail, kept)
        if tokens <= overlap:
            return tail, tokens
        kept.pop(0)  # the joins made more tokens than the sentences alone
    return "", 0


def count_joined(text: str, parts: Sequence[tuple[str, int]], count: Counter) -> int:
    """``count(text)`` for a text holding ``parts`` (piece, its tokens) in order, with
    anything between them, counting only the words around each join.

    Exact for a counter that never makes a token across a *cut*: a space preceded by a
    non-space character. Such a counter counts a text cut at cuts as the sum of the
    pieces' counts (cl100k_base: no pre-token reaches over a space from a non-space;
    a tokenizer adding tokens to every text, like BERT's [CLS], is not one). Each part's
    stretch from its first cut to its last is found in ``text`` and costs its count less
    its two ends; the rest of ``text`` is counted.
    """
    total, cursor = 0, 0
    for part, tokens in parts:
        first, last = _first_cut(part), _last_cut(part)
        if first is None or last is None or last <= first:
            continue
        at = text.find(part[first - 1 : last + 1], cursor)
        if at < 0:
            continue  # not verbatim in text (stripped at an end): counted with the rest
        start = at + 1
        total += count(text[cursor:start])
        total += tokens - count(part[:first]) - count(part[last:])
        cursor = start + (last - first)
    return total + count(text[cursor:])


def _first_cut(text: str) -> int | None:
    at = text.find(" ", 1)
    while at > 0:
        if not text[at - 1].isspace():
            return at
        at = text.find(" ", at + 1)
    return None


def _last_cut(text: str) -> int | None:
    at = text.rfind(" ")
    while at > 0:
        if not text[at - 1].isspace():
            return at
        at = text.rfind(" ", 0, at)
    return None


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
    ids whose text is gone; ``texts`` every chunk of the new text, in order (to plan
    again against what is stored when the write comes).
    """

    keep: dict[int, int] = field(default_factory=dict)
    add: list[tuple[int, str]] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def plan_chunks(stored: Sequence[tuple[int, int, str]], new: Sequence[str]) -> ChunkPlan:
    """Match stored chunks ``(id, number, text)`` to ``new`` chunk texts, by text."""
    plan = ChunkPlan(texts=list(new))
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
