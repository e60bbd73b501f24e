"""How the openai provider reads vectors from a response body."""

import base64

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
