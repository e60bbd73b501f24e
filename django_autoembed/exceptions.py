"""Exceptions raised by django-autoembed; all descend from AutoembedError.

Where callers expect a built-in kind (a lookup, a bad value, Django's
ImproperlyConfigured), the exception is that kind too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.core.exceptions import ImproperlyConfigured


class ErrorKind(StrEnum):
    """What trying again can do about a provider's error (see ``ProviderError``)."""

    TRANSIENT = "transient"
    THROTTLED = "throttled"
    INPUT = "input"
    CONFIG = "config"


class PauseKind(StrEnum):
    """Why a provider is paused: its configuration is refused, or it is unavailable."""

    CONFIG = "config"
    UNAVAILABLE = "unavailable"


class AutoembedError(Exception):
    """Base class for every error this library raises."""


class ConfigurationError(AutoembedError, ImproperlyConfigured):
    """Settings or declarations that cannot work; the message says what to change."""


class NotOwner(ConfigurationError):
    """This database role does not own a table that a model change's next step alters (its
    index build, switch or cutover): the owner runs ``autoembed_cutover``."""


class UnknownConfig(AutoembedError, LookupError):
    """No declared embedding has this label or name."""


class ModelChanged(ConfigurationError):
    """A config's declaration names another model, provider or dimensions than the ones that
    made its stored vectors: searching or embedding would mix two vector spaces.

    ``config`` is the config's label; the message says the three ways out.
    """

    def __init__(self, message: str, config: str) -> None:
        super().__init__(message)
        self.config = config


class QueueMissing(AutoembedError, LookupError):
    """The queue's table is not in the database (not migrated yet)."""


class InvalidValue(AutoembedError, ValueError):
    """A value passed in (a query text, a queue name, a posted job) that cannot be used."""


class ProviderError(AutoembedError):
    """The embedding provider failed or answered something unusable.

    ``kind`` says what trying again can do:

    - ``"transient"``: timeouts, server errors, refused connections; retry later.
    - ``"throttled"``: a rate limit; retry after ``retry_after``, costing no attempt.
    - ``"input"``: the request's input was refused (400/413/422); a request of
      several inputs is split to find the one at fault, that one fails alone.
    - ``"config"``: the key, the model or the dimensions are wrong for every
      input (401/403/404, a dimensions error); work pauses, costs no attempt
      and resumes by itself once the configuration is fixed.
    """

    KINDS = tuple(ErrorKind)

    def __init__(
        self,
        message: str,
        *,
        kind: str = ErrorKind.TRANSIENT,
        retry_after: float | None = None,
        limits: Any = None,
        status: int | None = None,
    ):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {[str(k) for k in self.KINDS]}, not {kind!r}")
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.retry_after = retry_after
        # A rate limit's x-ratelimit-* headers (providers.base.RateHeaders), when sent.
        self.limits = limits
        # The HTTP status the provider answered with, when it answered.
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.TRANSIENT, ErrorKind.THROTTLED)


class DimensionMismatch(ProviderError):
    """The provider returned vectors of another length than the column holds (for every input)."""

    def __init__(self, message: str):
        super().__init__(message, kind=ErrorKind.CONFIG)


class ProcessingPaused(AutoembedError):
    """The provider refused a whole batch; its jobs were handed back without costing an attempt.

    ``kind`` is ``"config"`` (the key, model or dimensions are wrong: nothing
    works until they are fixed) or ``"unavailable"`` (every request failed in
    passing: an outage or a rate limit). ``provider`` names the provider (name,
    model, server; no secrets).
    """

    def __init__(
        self, error: ProviderError, *, provider: str = "", kind: str = PauseKind.CONFIG
    ) -> None:
        super().__init__(f"{provider}: {error}" if provider else str(error))
        self.error = error
        self.provider = provider
        self.kind = PauseKind(kind)


class StatementCancelled(AutoembedError):
    """Postgres cancelled one of a batch's statements (a timeout); its jobs went back unspent.

    ``timeout`` is the session's ``statement_timeout`` as Postgres showed it.
    """

    def __init__(self, error: BaseException, timeout: str) -> None:
        said = str(error).strip()
        super().__init__(said.splitlines()[0] if said else "statement cancelled")
        self.timeout = timeout
