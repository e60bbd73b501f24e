"""The OpenAI protocol's shapes, without I/O: requests parsed, refusals and answers as the
real API words them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import numpy as np

from .limits import MODELS

Payload = dict[str, Any] | bytes  # bytes go out as they are: a file's content, prebuilt JSON


@dataclass(frozen=True)
class Reply:
    """An answer the handler sends as it is."""

    status: int
    payload: Payload
    headers: dict[str, str] = field(default_factory=dict)


def api_error(
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An error body in the shape the OpenAI API answers with."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def key_refusal(authorization: str, valid_keys: set[str] | None) -> Reply | None:
    """The 401 for a missing or unknown key (``valid_keys`` None: any key), or None."""
    key = authorization[7:] if authorization.startswith("Bearer ") else ""
    if key and (valid_keys is None or key in valid_keys):
        return None
    return Reply(
        401,
        api_error(
            f"Incorrect API key provided: {key[:3]}***{key[-4:]}."
            if key
            else "You didn't provide an API key.",
            code="invalid_api_key",
        ),
    )


@dataclass(frozen=True)
class EmbeddingsRequest:
    body: dict[str, Any]
    texts: list[str]
    model: str
    dims: int  # asked for, or the model's most (1536 for a model the fake doesn't know)


def parse_embeddings_request(raw: bytes) -> EmbeddingsRequest | Reply:
    """The request in ``raw``, or the 400 the API answers a body it cannot read with."""
    try:
        body = json.loads(raw)
        texts = body["input"]
        texts = [texts] if isinstance(texts, str) else list(texts)
        model = str(body.get("model"))
        dims = int(body.get("dimensions") or MODELS.get(model, (1536, True))[0])
    except (ValueError, KeyError, TypeError):
        return Reply(400, api_error("We could not parse the JSON body of your request."))
    return EmbeddingsRequest(body, texts, model, dims)


def access_refusal(
    request: EmbeddingsRequest,
    *,
    strict_models: bool,
    refused_models: set[str],
    quota_exhausted: bool,
) -> Reply | None:
    """The answer to a model the account may not use, dimensions the model doesn't give, or
    an account out of credit; None when the request may go on to the limits."""
    known = MODELS.get(request.model)
    if (strict_models and known is None) or request.model in refused_models:
        return Reply(
            404,
            api_error(
                f"The model `{request.model}` does not exist or you do not have access to it.",
                code="model_not_found",
            ),
        )
    dims = request.dims
    if known and "dimensions" in request.body and (not known[1] or not 0 < dims <= known[0]):
        return Reply(
            400,
            api_error(
                f"This model does not support specifying dimensions {dims}.",
                param="dimensions",
            ),
        )
    if quota_exhausted:
        return Reply(
            429,
            api_error(
                "You exceeded your current quota, please check your plan and billing details.",
                type_="insufficient_quota",
                code="insufficient_quota",
            ),
        )
    return None


def embeddings_payload(body: dict[str, Any], vectors: np.ndarray, tokens: int) -> Payload:
    """The answer's body: ``vectors`` (little-endian float32) as floats or base64, as asked."""
    if body.get("encoding_format") == "base64":
        return _base64_payload(json.dumps(body.get("model", "fake")), vectors, tokens)
    return {
        "object": "list",
        "model": body.get("model", "fake"),
        "data": [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _base64_payload(model: str, vectors: np.ndarray, tokens: int) -> bytes:
    # Built by hand: base64 needs no escaping, and json.dumps of
    # megabytes of it would make the fake the bottleneck of a bench.
    items = ",".join(
        f'{{"object":"embedding","index":{i},"embedding":"{base64.b64encode(v.tobytes()).decode()}"}}'
        for i, v in enumerate(vectors)
    )
    return (
        f'{{"object":"list","data":[{items}],"model":{model},'
        f'"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}'
    ).encode()


def parse_form(content_type: str, raw: bytes) -> tuple[dict[str, Any], str]:
    """(a multipart form's fields by name, the last file name in it or "upload.jsonl")."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    form = BytesParser(policy=HTTP).parsebytes(head + raw)
    fields: dict[str, Any] = {}
    filename = "upload.jsonl"
    for part in form.iter_parts() if form.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = part.get_payload(decode=True) or b""
        filename = part.get_filename() or filename
    return fields, filename
