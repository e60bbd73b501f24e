"""How many batches ``--estimate`` announces: the enqueued-token share, the API's 50,000
inputs and its 200 MB file a batch, whichever binds first."""

from django_autoembed.batches.estimate import Estimate


def backlog(rows: int, tokens: int, inputs: int | None = None, size: int = 0) -> Estimate:
    return Estimate(
        "app.Doc.embedding",
        "text-embedding-3-small",
        rows,
        1000,
        tokens,
        1.0,
        0.5,
        rows if inputs is None else inputs,
        size,
    )


def test_short_rows_are_counted_in_batches_of_50000_inputs(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": 100_000_000}  # tier 3
    # Two million rows of ten tokens: a quarter of the budget would take them in one batch.
    assert backlog(2_000_000, 20_000_000).batches == 40


def test_long_rows_are_counted_by_the_enqueued_token_share(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": 3_000_000}  # tier 1
    assert backlog(10_000, 7_500_000).batches == 10  # 750,000 tokens a batch


def test_chunks_are_inputs_too(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": 4_000_000_000}
    assert backlog(10_000, 10_000_000, inputs=120_000).batches == 3


def test_long_texts_are_counted_in_files_of_200_mb(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "BATCH_QUEUE_TOKENS": 4_000_000_000}
    # 40,000 rows of 8,000 tokens, about 32 kB each in the file: 1.3 GB, 7 files.
    assert backlog(40_000, 320_000_000, size=40_000 * 32_200).batches == 7


def test_nothing_to_embed_is_no_batch():
    assert backlog(0, 0).batches == 0
