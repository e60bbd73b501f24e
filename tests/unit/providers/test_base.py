"""providers.base: requests packed by tokens and inputs."""

from django_autoembed.providers.base import chunk_inputs


def test_requests_are_packed_by_tokens_and_inputs():
    texts = ["a" * 30] * 10  # 11 estimated tokens each
    assert list(chunk_inputs(texts, max_inputs=4, max_tokens=1000)) == [(0, 4), (4, 8), (8, 10)]
    assert list(chunk_inputs(texts, max_inputs=100, max_tokens=25)) == [
        (0, 2),
        (2, 4),
        (4, 6),
        (6, 8),
        (8, 10),
    ]
