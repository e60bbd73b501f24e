"""Embedding providers: "openai", "local", or a dotted path to a class with embed(texts)."""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .. import conf
from .base import Provider

BUILTIN = {
    "openai": "django_autoembed.providers.openai.OpenAIProvider",
    "local": "django_autoembed.providers.local.LocalProvider",
}

_cache: dict[tuple[Any, ...], Provider] = {}
_lock = threading.Lock()


def get_provider(name: str | None = None, *, model: str, dimensions: int) -> Provider:
    """The provider instance for this name/model/dimensions, built once per settings."""
    name = name or conf.get("PROVIDER")
    key = (name, model, dimensions, conf.get("BASE_URL"), conf.get("API_KEY"),
           conf.get("REQUEST_TIMEOUT"), conf.get("PROVIDER_RETRIES"))
    with _lock:
        provider = _cache.get(key)
        if provider is None:
            path = BUILTIN.get(name, name)
            try:
                cls = import_string(path)
            except ImportError as exc:
                raise ImproperlyConfigured(
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


__all__ = ["Provider", "get_provider"]
