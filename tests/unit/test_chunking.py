"""The splitter: exact token bounds whatever the joins do, order kept, overlap bounded."""

import random
import re

import pytest

from django_autoembed.chunking import count_joined, split
from django_autoembed.providers.openai import encoding
from django_autoembed.tokenizers import cl100k_head

WORDS = (
    "the a river bridge north village market council road 1998 winter, data: (see) [x] ü 東京"
).split()


def count(text: str) -> int:
    return len(encoding().encode_ordinary(text))


def text_of(seed: int) -> str:
    """Paragraphs of short sentences ending in punctuation (their joins with the next
    paragraph change the tokens: ".\n\n" is a token of its own), a paragraph with no
    sentence breaks, and a word longer than a chunk."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(rng.randint(5, 40)):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))).capitalize()
            + rng.choice([".", "!", "?", ".)", "…"])
            for _ in range(rng.randint(1, 8))
        ]
        paragraphs.append(" ".join(sentences))
    paragraphs.insert(
        rng.randrange(len(paragraphs)), " ".join(rng.choice(WORDS) for _ in range(400))
    )
    paragraphs.insert(rng.randrange(len(paragraphs)), "x" * 3000)
    return "\n\n".join(paragraphs)


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize(("size", "overlap"), [(40, 8), (120, 16), (512, 64)])
def test_every_chunk_is_within_the_size_and_the_words_keep_their_order(seed, size, overlap):
    text = text_of(seed)
    chunks = split(text, size=size, overlap=overlap, count=count)
    assert chunks and max(count(c) for c in chunks) <= size
    # the text's words are a subsequence of the chunks' words (overlaps only repeat some),
    # the word longer than a chunk aside: it is cut into pieces
    words = [w for w in text.split() if set(w) != {"x"}]
    position = 0
    for chunk in chunks:
        for word in chunk.split():
            if position < len(words) and word == words[position]:
                position += 1
    assert position == len(words)
    cut = [w for c in chunks for w in c.split() if set(w) == {"x"}]
    assert sum(map(len, cut)) >= 3000  # all of it (an overlap may repeat a short piece)


def test_the_same_text_always_splits_the_same_way():
    text = text_of(3)
    assert split(text, size=120, overlap=16, count=count) == split(
        text, size=120, overlap=16, count=count
    )


# Characters whose joins change cl100k_base's pre-tokens: newlines after punctuation,
# runs of spaces, contractions, digits (grouped by three), non-ASCII spaces, CJK, emoji.
TRICKY = [
    *"ab Z  \n\t.,;:!?'\"()[]-/0123456789üé東京😀\u00a0\u3000\x1c\r",
    "'s",
    "'ll",
    " the",
    "...",
    "12345",
    " river bridge",
    "word",
]


class Tally:
    """The tokenizer, counting the characters it was asked to count."""

    def __init__(self) -> None:
        self.chars = 0

    def __call__(self, text: str) -> int:
        self.chars += len(text)
        return count(text)


@pytest.mark.parametrize("seed", range(4))
def test_a_joined_text_is_counted_exactly_from_its_joins(seed):
    rng = random.Random(seed)
    tally = Tally()
    for _ in range(2500):
        parts = [
            "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 5))
        ]
        seps = [rng.choice(["", " ", "  ", "\n\n", "\n", ".", "x"]) for _ in parts]
        text = "".join(s + p for s, p in zip(seps, parts, strict=True)) + rng.choice(["", " "])
        assert count_joined(text, [(p, count(p)) for p in parts], tally) == count(text), text
    # Long pieces are counted by their ends: a small share of what the text holds.
    tally.chars = 0
    pieces = [" ".join(rng.choice(WORDS) for _ in range(300)) for _ in range(4)]
    text = " ".join(pieces)
    assert count_joined(text, [(p, count(p)) for p in pieces], tally) == count(text)
    assert tally.chars < len(text) / 10


@pytest.mark.parametrize("joins_at_spaces", [False, True])
def test_no_chunk_of_a_tricky_text_is_over_the_size(joins_at_spaces):
    # A sentence after "。 " was counted with its space and stored without it: one token more.
    tricky = split(
        "。 <|n:ü", size=4, overlap=0, count=count, cut=cl100k_head, joins_at_spaces=joins_at_spaces
    )
    assert tricky == [
        "。",
        "<|n:",
        "ü",
    ]
    rng = random.Random(3)
    pieces = [*TRICKY, "。", "。 ", "！ ", "？\n", ". ", "<|"]
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 60)))
        size = rng.choice([4, 6, 9, 16, 30])
        for overlap in (0, size // 3):
            chunks = split(
                text,
                size=size,
                overlap=overlap,
                count=count,
                cut=cl100k_head,
                joins_at_spaces=joins_at_spaces,
            )
            # a character can be more tokens than a tiny chunk: only those may be over
            assert all(count(c) <= size or len(c) == 1 for c in chunks), (text, size, chunks)


def prose_of(seed: int) -> str:
    """Paragraphs of sentences of a book's lengths."""
    rng = random.Random(seed)
    return "\n\n".join(
        " ".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))).capitalize() + "."
            for _ in range(rng.randint(2, 9))
        )
        for _ in range(60)
    )


@pytest.mark.parametrize(("size", "overlap"), [(40, 8), (120, 16), (512, 64)])
def test_counting_by_joins_makes_the_same_chunks(size, overlap):
    for seed in range(10):
        for text in (text_of(seed), prose_of(seed)):
            assert split(text, size=size, overlap=overlap, count=count, cut=cl100k_head) == split(
                text, size=size, overlap=overlap, count=count, cut=cl100k_head, joins_at_spaces=True
            )


def test_counting_by_joins_counts_prose_about_once():
    whole, joins = Tally(), Tally()
    for seed in range(5):
        text = prose_of(seed)
        split(text, size=512, overlap=64, count=whole)
        split(text, size=512, overlap=64, count=joins, joins_at_spaces=True)
    length = sum(len(prose_of(seed)) for seed in range(5))
    assert whole.chars > 2 * length and joins.chars < 1.5 * length


def test_sentences_end_at_a_stop_and_white_space_or_at_a_cjk_stop():
    from django_autoembed.chunking import _sentences

    assert _sentences("One. Two!  Three?\nFour… five") == [
        "One.",
        "Two!",
        "Three?",
        "Four…",
        "five",
    ]
    assert _sentences("v1.2 e.g.x 3.5. End.") == ["v1.2 e.g.x 3.5.", "End."]
    assert _sentences("東京。大阪！ 京都？x") == ["東京。", "大阪！", "京都？", "x"]
    assert _sentences("a.. b") == ["a..", "b"]
    assert _sentences("Done. ") == ["Done.", ""]
    # The definition, as a (slower) look-behind split: the same pieces for any text.
    spec = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])\s*")
    rng = random.Random(3)
    alphabet = "ab .!?…。！？ \n\r\t\x85\xa0\u2028\u3000"  # Python's \s, not only ASCII's
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert _sentences(text) == spec.split(text), repr(text)
