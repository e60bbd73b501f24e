"""hnsw.indexes: our HNSW index against pgvector's."""

from django.db import models

from django_autoembed.hnsw.indexes import HnswIndex


def test_our_hnsw_index_equals_pgvectors_with_the_same_arguments():
    from pgvector.django import HnswIndex as PgvectorHnsw

    kwargs = {
        "name": "i",
        "fields": ["embedding"],
        "m": 16,
        "ef_construction": 64,
        "opclasses": ["halfvec_cosine_ops"],
    }
    ours = HnswIndex(**kwargs)
    assert ours == PgvectorHnsw(**kwargs) and PgvectorHnsw(**kwargs) == ours
    assert ours != PgvectorHnsw(**{**kwargs, "m": 8})
    assert ours.deconstruct()[0] == "django_autoembed.hnsw.indexes.HnswIndex"
    from django_autoembed.indexes import HnswIndex as Old  # migrations written before the move

    assert Old is HnswIndex
    assert ours.with_params() == ["m = 16", "ef_construction = 64"]
    assert isinstance(ours, models.Index)
