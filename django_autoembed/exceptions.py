"""Exceptions raised by django-autoembed; all descend from AutoembedError."""

from __future__ import annotations


class AutoembedError(Exception):
    """Base class for every error this library raises."""


class ProviderError(AutoembedError):
    """The embedding provider failed or answered something unusable.

    ``retryable`` tells the processor whether trying again later may succeed
    (rate limits, timeouts, server errors) or whether the input itself is bad.
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class DimensionMismatch(ProviderError):
    """The provider returned vectors of another length than the column holds."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class UnknownTarget(AutoembedError):
    """A job names a schema/table/function/column that no declaration matches."""
