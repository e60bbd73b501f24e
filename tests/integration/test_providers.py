"""How the openai provider reads vectors from a response body."""

import base64
import logging

import numpy as np
import pytest

from django_autoembed.providers.openai import _decode


def test_base64_strict_line_wrapped_and_float_lists_decode_alike():
    vector = np.linspace(-1, 1, 12, dtype="<f4")
    encoded = base64.b64encode(vector.tobytes()).decode()
    wrapped = "\n".join(
        encoded[i : i + 16] for i in range(0, len(encoded), 16)
    )  # as some servers send it
    for body in (encoded, wrapped, vector.tolist()):
        np.testing.assert_array_equal(_decode(body), vector)


def test_garbage_is_a_value_error_the_provider_reports():
    with pytest.raises(ValueError):
        _decode("this is not base64!")


# -- the local model's own tokenizer -------------------------------------------------


@pytest.fixture(scope="module")
def local():
    pytest.importorskip("sentence_transformers", reason="the local extra is not installed here")
    from django_autoembed.providers.local import LocalProvider

    return LocalProvider(model="all-MiniLM-L6-v2", dimensions=384)


def test_the_local_model_counts_its_special_tokens_against_its_limit(local):
    assert local.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    # 255 bytes, each its own token: 257 with [CLS] and [SEP], over the 256 the model reads,
    # which sentence-transformers would cut without a word.
    dots = "." * 255
    assert local.over_limit(dots) == 257
    assert local.over_limit("." * 254) is None
    cut = local.head(dots, local.max_input_tokens)
    assert dots.startswith(cut) and local.count_tokens(cut) == local.max_input_tokens


def test_counting_a_text_longer_than_the_model_reads_says_nothing(local):
    """Chunking and the too-long check count long texts on purpose: the tokenizer's warning
    about sequences past 256 tokens is noise in the worker's and the demo's output."""
    from django_autoembed.providers.local import _load

    tokenizer = _load(local.model).tokenizer
    tokenizer.deprecation_warnings.clear()  # it warns once per tokenizer: make this the once
    said: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = said.append
    logging.getLogger("transformers").addHandler(listener)
    try:
        long = "word " * 2000
        assert local.count_tokens(long) == 2002 and local.head(long, 100)
    finally:
        logging.getLogger("transformers").removeHandler(listener)
    assert not [r.getMessage() for r in said if "longer than" in r.getMessage()]


def test_what_a_local_input_costs_a_request_is_never_below_its_tokens(local):
    # Small inputs are costed by their bytes (no tokenizer run), large ones by their tokens.
    for text in ("hello world", "." * 300, "word " * 400, "Übergrößenträger " * 400):
        assert local.request_cost(text) >= local.count_tokens(text)
