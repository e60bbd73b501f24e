"""One batch of queue messages, stage by stage (the modules, in the order a batch meets them):

- ``read``: the rows the messages name, checked against the declarations; their text now.
- ``target``: each config resolved once per batch (quoted names, column type, provider).
- ``plan``: chunk plans, made on reading and made again under the row locks.
- ``embed``: known vectors from memory or the store, the rest from the provider, through
  ``fanout`` (which requests, what each answer means) and ``pacing`` (the rate budget).
- ``destinations``: where the vectors go, the row's column or its chunk table.
- ``acks``: outcomes, and what each message becomes (pure), applied in the write's
  transaction.
- ``run``: ``Processor``, which orchestrates them, and ``run_batch``, what the worker's
  lanes and the endpoint call.
"""

from .run import BatchResult, Processor, run_batch

__all__ = ["BatchResult", "Processor", "run_batch"]
