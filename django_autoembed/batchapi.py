"""The Batch API's old home: everything now lives in ``django_autoembed.batches``."""

from .batches import Batches, BatchState, ProviderBatch, in_flight, status_rows

__all__ = ["BatchState", "Batches", "ProviderBatch", "in_flight", "status_rows"]
