"""OpenAI and any server speaking its embeddings protocol (BASE_URL)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import openai as openai_sdk
import pybase64

from .. import settings, tokenizers
from ..exceptions import ConfigurationError, ProviderError
from .base import Answer, BatchOutput, Provider, RateHeaders

# Statuses that say the request's input was refused: split it to find the input at fault.
INPUT_STATUSES = (400, 413, 422)
# Statuses that say the key, the account or the model is wrong: pause, spend no attempt.
CONFIG_STATUSES = (401, 403, 404)
# A 400 about one of these parameters is wrong for every input, not for one.
CONFIG_PARAMS = ("model", "dimensions", "encoding_format")


encoding = tokenizers.cl100k  # the name the fake and the tests import


class OpenAIProvider(Provider):
    """The embeddings API's limits, as it enforces them: 2,048 inputs and 300,000 tokens a
    request, 8,192 tokens an input, counted with cl100k_base."""

    name = "openai"
    max_inputs = 2048
    max_input_tokens = 8192
    max_request_tokens = 300_000
    exact_tokens = True
    reports_rate_limits = True

    # Loadable by name in a splitting process (see splitpool).
    tokenizer = (
        "django_autoembed.tokenizers.cl100k_count",
        "django_autoembed.tokenizers.cl100k_head",
    )
    joins_at_spaces = True

    def count_tokens(self, text: str) -> int:
        return tokenizers.cl100k_count(text)

    def head(self, text: str, tokens: int) -> str:
        return tokenizers.cl100k_head(text, tokens)

    def __init__(self, *, model: str, dimensions: int) -> None:
        super().__init__(model=model, dimensions=dimensions)
        api_key = settings.current().api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ConfigurationError(
                "The openai provider needs an API key. Set AUTOEMBED['API_KEY'] or the "
                "OPENAI_API_KEY environment variable, or choose PROVIDER 'local'."
            )
        # The rate-limit headers of each response, per thread (each request runs in one).
        self._seen = threading.local()
        self.client = openai_sdk.OpenAI(
            api_key=api_key,
            base_url=settings.current().base_url or None,
            timeout=float(settings.current().request_timeout),
            max_retries=int(settings.current().provider_retries),
            http_client=openai_sdk.DefaultHttpxClient(event_hooks={"response": [self._headers]}),
        )
        # ada-002 refuses the dimensions parameter; text-embedding-3 and compatibles take it.
        self.send_dimensions = model != "text-embedding-ada-002"

    def _headers(self, response: Any) -> None:
        self._seen.headers = response.headers

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors: np.ndarray = self.request(texts).vectors
        return vectors

    def request(self, texts: list[str]) -> Answer:
        self._seen.headers = None
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "base64"}
        if self.send_dimensions:
            body["dimensions"] = self.dimensions
        # The client's generic POST keeps its auth, timeout, retries (with Retry-After) and
        # typed errors, and skips what embeddings.create adds on top: a walk over every
        # input string and typed response objects, which at 100 inputs per request cost
        # more CPU than the request.
        with _errors(self.model):
            raw = self.client.post("/embeddings", body=body, cast_to=bytes)
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise ProviderError(f"openai: the response is not JSON ({exc}).") from exc
        usage = payload.get("usage") if isinstance(payload, dict) else None
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
        return Answer(
            decode_vectors(payload, self.dimensions),
            tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
            limits=RateHeaders.parse(getattr(self._seen, "headers", None)),
        )

    # -- the Batch API (batches/) --------------------------------------------------

    def submit_batch(
        self, requests: list[list[str]], *, custom_prefix: str, metadata: dict[str, str]
    ) -> str:
        """Upload one embeddings request per list of texts and create a batch; its id."""
        lines = []
        for n, texts in enumerate(requests):
            body: dict[str, Any] = {
                "model": self.model,
                "input": texts,
                "encoding_format": "base64",
            }
            if self.send_dimensions:
                body["dimensions"] = self.dimensions
            lines.append(
                json.dumps(
                    {
                        "custom_id": f"{custom_prefix}-{n}",
                        "method": "POST",
                        "url": "/v1/embeddings",
                        "body": body,
                    }
                )
            )
        data = ("\n".join(lines) + "\n").encode()
        with _errors(self.model):
            uploaded = self.client.files.create(
                file=(f"{custom_prefix}.jsonl", data, "application/jsonl"), purpose="batch"
            )
            batch = self.client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/embeddings",
                completion_window="24h",
                metadata=metadata,
            )
        return str(batch.id)

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        with _errors(self.model, batch=True):
            batch = self.client.batches.retrieve(batch_id)
        return batch.model_dump()

    def find_batch(self, metadata: dict[str, str]) -> str | None:
        """The id of a recent batch created with this metadata (a submission cut short)."""
        with _errors(self.model, batch=True):
            for batch in self.client.batches.list(limit=100):
                found = batch.metadata or {}
                if all(found.get(k) == v for k, v in metadata.items()):
                    return str(batch.id)
        return None

    def cancel_batch(self, batch_id: str) -> None:
        with _errors(self.model, batch=True):
            self.client.batches.cancel(batch_id)

    def batch_results(self, info: dict[str, Any], *, custom_prefix: str) -> BatchOutput:
        """What a finished batch's output and error files say."""
        result = BatchOutput()
        for key in ("output_file_id", "error_file_id"):
            file_id = info.get(key)
            if file_id:
                with _errors(self.model, batch=True):
                    content = self.client.files.content(file_id).content
                parse_output(content, custom_prefix, self.dimensions, result)
        return result


@contextmanager
def _errors(model: str, *, batch: bool = False) -> Iterator[None]:
    """The SDK's errors as ProviderErrors of the kind that says what retrying can do."""
    try:
        yield
    except openai_sdk.RateLimitError as exc:
        if _code(exc) == "insufficient_quota":  # billing, not a rate: no wait will fix it
            raise ProviderError(
                "openai: HTTP 429 insufficient_quota: the account's credit or monthly budget "
                "is spent. Add credit or raise the budget at the provider (billing settings); "
                "nothing is retried until then.",
                kind="config",
                status=429,
            ) from exc
        raise ProviderError(
            f"openai: rate limited ({exc.status_code}).",
            kind="throttled",
            retry_after=_retry_after(exc),
            limits=RateHeaders.parse(getattr(getattr(exc, "response", None), "headers", None)),
            status=429,
        ) from exc
    except openai_sdk.APITimeoutError as exc:
        raise ProviderError(
            f"openai: request timed out after {settings.current().request_timeout} s."
        ) from exc
    except openai_sdk.APIConnectionError as exc:
        raise ProviderError(f"openai: cannot connect ({exc}).") from exc
    except openai_sdk.APIStatusError as exc:
        said = f"openai: HTTP {exc.status_code}: {exc.message}" if batch else _explain(exc, model)
        raise ProviderError(
            said, kind=_kind(exc), retry_after=_retry_after(exc), status=exc.status_code
        ) from exc


def decode_vectors(payload: Any, dimensions: int | None = None) -> np.ndarray:
    """The vectors of an embeddings response body, in input order."""
    try:
        data = sorted(payload["data"], key=lambda item: item["index"])
        vectors = [_decode(item["embedding"]) for item in data]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"openai: unexpected response shape ({exc!r}).") from exc
    if not vectors:
        return np.empty((0, dimensions or 0), dtype=np.float32)
    try:
        return np.stack(vectors)
    except ValueError as exc:
        raise ProviderError(f"openai: vectors of different lengths ({exc}).") from exc


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


def _code(exc: openai_sdk.APIStatusError) -> str | None:
    """The error's code (``insufficient_quota``, ``model_not_found``...), where it says one."""
    code = getattr(exc, "code", None)
    if code is None and isinstance(exc.body, dict):
        code = exc.body.get("code")
    return str(code) if code else None


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


def parse_output(
    content: bytes, custom_prefix: str, dimensions: int, result: BatchOutput | None = None
) -> BatchOutput:
    """Read a Batch API output or error file (JSONL) into ``result``."""
    result = result or BatchOutput()
    for raw in content.splitlines():
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            custom = str(item.get("custom_id", ""))
            if not custom.startswith(custom_prefix + "-"):
                continue
            line = int(custom[len(custom_prefix) + 1 :])
        except (ValueError, TypeError, AttributeError):
            continue
        response = item.get("response") or {}
        body = response.get("body") if isinstance(response, dict) else None
        status = response.get("status_code") if isinstance(response, dict) else None
        if status == 200 and isinstance(body, dict) and "data" in body:
            try:
                matrix = decode_vectors(body)
            except ProviderError as exc:
                result.errors[line] = str(exc)
                continue
            if matrix.ndim == 2 and matrix.shape[1] == dimensions:
                result.vectors[line] = matrix
            else:
                result.errors[line] = f"vectors of {matrix.shape[-1]} dimensions, not {dimensions}"
            tokens = (body.get("usage") or {}).get("total_tokens")
            if isinstance(tokens, int):
                result.tokens += tokens
            continue
        error = item.get("error") or (body or {}).get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        result.errors[line] = f"HTTP {status}: {message}" if status else str(message or "failed")
    return result
