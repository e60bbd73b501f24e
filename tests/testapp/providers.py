"""Custom providers named by dotted path in AUTOEMBED['PROVIDER'] (no Provider base class)."""

import numpy as np

from django_autoembed.testing import fake_vector


def custom_vector(text: str, dims: int = 1536) -> np.ndarray:
    """Not the fake API's vector for the text, so a test can tell who embedded a row."""
    return fake_vector(f"custom: {text}", dims)


class Custom:
    """Plain lists of floats, as a user's own class might return them."""

    calls: list[list[str]] = []

    def embed(self, texts):
        Custom.calls.append(list(texts))
        return [custom_vector(t).tolist() for t in texts]


class Unstorable:
    """NaN for texts that mention 'nan', a value past halfvec's range for 'huge'."""

    def embed(self, texts):
        out = []
        for text in texts:
            vector = custom_vector(text)
            if "nan" in text:
                vector[3] = np.nan
            elif "huge" in text:
                vector[0] = 1e6
            out.append(vector)
        return np.stack(out)


def split_on_pipes(text, size, overlap, count):
    """A custom splitter, named by dotted path: one chunk per '|'-separated part."""
    return [part.strip() for part in text.split("|")]


def split_or_refuse(text, size, overlap, count):
    """A custom splitter with bugs: it raises on one text and returns a NUL on another."""
    if "boom" in text:
        raise RuntimeError("cannot split a boom")
    if "nul" in text:
        return ["a\x00b"]
    return [part.strip() for part in text.split("|")]
