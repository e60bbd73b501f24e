"""hnsw.scan: the search expression and the settings it carries."""

from django_autoembed.hnsw.scan import MARK, SearchDistance


def test_the_search_expression_carries_its_settings_in_a_comment():
    expression = SearchDistance("embedding", [1.0, 0.0], ef_search=64)
    assert expression.ef_search == 64 and MARK == "autoembed:hnsw"
    assert SearchDistance("embedding", [1.0, 0.0]).ef_search is None
