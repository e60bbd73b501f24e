"""Embedding providers: "openai", "local", or a dotted path to a class with embed(texts)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.utils.module_loading import import_string

from .. import settings
from ..exceptions import ConfigurationError
from .base import Provider

if TYPE_CHECKING:
    from ..declarations import EmbeddingConfig

BUILTIN = {
    "openai": "django_autoembed.providers.openai.OpenAIProvider",
    "local": "django_autoembed.providers.local.LocalProvider",
}

_cache: dict[tuple[Any, ...], Provider] = {}
_lock = threading.Lock()


def get_provider(name: str | None = None, *, model: str, dimensions: int) -> Provider:
    """The provider instance for this name/model/dimensions, built once per settings."""
    name = name or settings.current().provider
    key = (
        name,
        model,
        dimensions,
        settings.current().base_url,
        settings.current().api_key,
        settings.current().request_timeout,
        settings.current().provider_retries,
    )
    with _lock:
        provider = _cache.get(key)
        if provider is None:
            path = BUILTIN.get(name, name)
            try:
                cls = import_string(path)
            except ImportError as exc:
                raise ConfigurationError(
                    f"AUTOEMBED PROVIDER {name!r} is not 'openai', 'local' or an importable "
                    f"dotted path to a class with embed(texts) ({exc})."
                ) from exc
            if isinstance(cls, type) and issubclass(cls, Provider):
                provider = cls(model=model, dimensions=dimensions)
            else:
                provider = _Wrapped(cls(), model=model, dimensions=dimensions)
            _cache[key] = provider
    return provider


class _Wrapped(Provider):
    """Adapts any object with ``embed(list[str])`` to the Provider interface."""

    def __init__(self, inner: Any, *, model: str, dimensions: int) -> None:
        super().__init__(model=model, dimensions=dimensions)
        self.inner = inner
        self.name = type(inner).__name__
        for attr in ("max_inputs", "max_input_tokens", "max_request_tokens"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def embed(self, texts: list[str]) -> Any:
        return self.inner.embed(texts)


def for_config(config: EmbeddingConfig) -> Provider:
    """The provider that embeds ``config``'s text (and its search queries)."""
    return get_provider(
        config.provider, model=config.get_model(), dimensions=config.get_dimensions()
    )


def label(config: EmbeddingConfig) -> str:
    """How logs and status name the provider of ``config``: name, model and server, no secrets."""
    server = settings.current().base_url
    name = config.provider or settings.current().provider
    shown = _without_secrets(str(server)) if server else ""
    return f"{name} {config.get_model()}" + (f" at {shown}" if shown and name == "openai" else "")


def _without_secrets(url: str) -> str:
    """A server's URL without what may hold a secret: user info and the query string."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def pause_key(config: EmbeddingConfig) -> str:
    """What a configuration error pauses: the provider, model and server (``label``) and the
    dimensions asked for. Configs that differ in any of these keep working."""
    return f"{label(config)}, {config.get_dimensions()} dims"


# What a provider is asked to embed to learn whether it works now.
PROBE_TEXT = "django-autoembed availability probe"


def probe(config: EmbeddingConfig) -> bool:
    """Whether the provider of ``config`` embeds a harmless text right now, with the
    dimensions the config stores."""
    from .base import as_matrix

    try:
        provider = for_config(config)
        answer = provider.embed([PROBE_TEXT])
        as_matrix(answer, 1, config.get_dimensions(), provider.name)
    except Exception:  # any failure means: not now
        return False
    return True


__all__ = ["Provider", "for_config", "get_provider", "label", "pause_key", "probe"]
