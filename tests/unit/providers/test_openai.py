"""providers.openai: the API's errors sorted by what retrying can do."""

import json

import httpx2
import openai
import pytest

from django_autoembed.exceptions import ProviderError
from django_autoembed.providers.openai import _explain, _kind

ERRORS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def status_error(status: int, body: dict) -> openai.APIStatusError:
    """The error the openai client raises for a response of ``status`` with ``body``."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/embeddings")
    response = httpx2.Response(status, request=request, content=json.dumps(body).encode())
    cls = ERRORS.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(
        f"Error code: {status} - {body['error']['message']}", response=response, body=body["error"]
    )


@pytest.mark.parametrize(
    ("status", "param", "kind"),
    [
        (401, None, "config"),
        (403, None, "config"),
        (404, None, "config"),
        (400, "dimensions", "config"),
        (400, "model", "config"),
        (400, None, "input"),
        (413, None, "input"),
        (422, None, "input"),
        (429, None, "throttled"),
        (500, None, "transient"),
        (503, None, "transient"),
        (408, None, "transient"),
    ],
)
def test_openai_statuses_are_sorted_into_config_input_and_passing_errors(status, param, kind):
    error = status_error(
        status, {"error": {"message": "m", "type": "t", "param": param, "code": None}}
    )
    assert _kind(error) == kind
    ProviderError("x", kind=kind)  # a kind the error type accepts


def test_a_401_says_which_setting_to_fix():
    error = status_error(401, {"error": {"message": "Incorrect API key provided", "type": "t"}})
    assert "AUTOEMBED['API_KEY']" in _explain(error, "m") and "Error code" not in _explain(
        error, "m"
    )
