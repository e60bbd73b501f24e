"""OpenAI and any server speaking its embeddings protocol (BASE_URL)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import openai as openai_sdk
import pybase64
from django.core.exceptions import ImproperlyConfigured

from .. import conf
from ..exceptions import ProviderError
from .base import Provider


class OpenAIProvider(Provider):
    name = "openai"
    max_inputs = 2048
    max_input_tokens = 8191
    max_request_tokens = 300_000

    def __init__(self, *, model: str, dimensions: int, **options: Any) -> None:
        super().__init__(model=model, dimensions=dimensions, **options)
        api_key = conf.get("API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ImproperlyConfigured(
                "The openai provider needs an API key. Set AUTOEMBED['API_KEY'] or the "
                "OPENAI_API_KEY environment variable, or choose PROVIDER 'local'."
            )
        self.client = openai_sdk.OpenAI(
            api_key=api_key,
            base_url=conf.get("BASE_URL") or None,
            timeout=float(conf.get("REQUEST_TIMEOUT")),
            max_retries=int(conf.get("PROVIDER_RETRIES")),
        )
        # ada-002 refuses the dimensions parameter; text-embedding-3 and compatibles take it.
        self.send_dimensions = model != "text-embedding-ada-002"

    def embed(self, texts: list[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "base64"}
        if self.send_dimensions:
            body["dimensions"] = self.dimensions
        try:
            # The client's generic POST keeps its auth, timeout, retries (with
            # Retry-After) and typed errors, and skips what embeddings.create adds
            # on top: a walk over every input string and typed response objects,
            # which at 100 inputs per request cost more CPU than the request.
            payload = json.loads(self.client.post("/embeddings", body=body, cast_to=bytes))
        except openai_sdk.RateLimitError as exc:
            raise ProviderError(
                f"openai: rate limited ({exc.status_code}).", retryable=True, retry_after=_retry_after(exc)
            ) from exc
        except openai_sdk.APITimeoutError as exc:
            raise ProviderError(f"openai: request timed out after {conf.get('REQUEST_TIMEOUT')} s.") from exc
        except openai_sdk.APIConnectionError as exc:
            raise ProviderError(f"openai: cannot connect ({exc}).") from exc
        except openai_sdk.APIStatusError as exc:
            # 4xx other than 429 means the input or the request is wrong: retrying won't help.
            retryable = exc.status_code >= 500 or exc.status_code in (408, 409)
            raise ProviderError(f"openai: HTTP {exc.status_code}: {exc.message}", retryable=retryable) from exc
        except ValueError as exc:
            raise ProviderError(f"openai: the response is not JSON ({exc}).") from exc
        try:
            data = sorted(payload["data"], key=lambda item: item["index"])
            vectors = [_decode(item["embedding"]) for item in data]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"openai: unexpected response shape ({exc!r}).") from exc
        return np.stack(vectors) if vectors else np.empty((0, self.dimensions))


def _decode(embedding: Any) -> np.ndarray:
    if isinstance(embedding, str):
        # pybase64: SIMD decoding, ~20x the standard library's on 8 KB strings. Its
        # strict mode is the fast one; a server that wraps lines gets the lenient one.
        try:
            raw = pybase64.b64decode(embedding, validate=True)
        except ValueError:
            raw = pybase64.b64decode(embedding)
        return np.frombuffer(raw, dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def _retry_after(exc: openai_sdk.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
