"""The splitter: exact token bounds whatever the joins do, order kept, overlap bounded."""

import random

import pytest

from django_autoembed.chunking import split
from django_autoembed.providers.openai import encoding

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
