"""The AUTOEMBED settings: one typed object, each key with its default, validated once.

``current()`` reads ``settings.AUTOEMBED`` at call time (so ``override_settings`` works) and
checks it the first time it sees a given dict: an unknown key or a value of the wrong type
is a ``ConfigurationError`` naming the key and the fix. Code reads the typed attributes
(``current().batch_size``), never the dict.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from django.conf import settings as django_settings

from .exceptions import ConfigurationError

_NUMBER = (int, float)


def _key(doc: str, *types: type | None) -> Any:
    """A settings field: what it means and the types its value may have (None: may be None)."""
    return {"doc": doc, "types": types}


@dataclass(frozen=True)
class AutoembedSettings:
    """Every AUTOEMBED key, lowercased, with its default."""

    provider: str = field(
        default="openai",
        metadata=_key('"openai", "local", or a dotted path to a class with embed(texts)', str),
    )
    model: str = field(default="text-embedding-3-small", metadata=_key("the model's name", str))
    dimensions: int = field(default=1536, metadata=_key("vector size (column and request)", int))
    base_url: str | None = field(
        default=None, metadata=_key("an OpenAI-compatible server's URL", str, None)
    )
    api_key: str | None = field(
        default=None, metadata=_key("the key (else OPENAI_API_KEY)", str, None)
    )
    request_timeout: float = field(
        default=30.0, metadata=_key("seconds per embedding request", *_NUMBER)
    )
    provider_retries: int = field(
        default=2, metadata=_key("retries of the client on a failed request", int)
    )
    queue: str = field(
        default="embedding_jobs", metadata=_key("the pgmq queue the triggers write to", str)
    )
    batch_size: int = field(default=100, metadata=_key("inputs per embedding request", int))
    max_requests: int = field(default=8, metadata=_key("requests in flight per lane", int))
    # Three lanes keep both of two cores busy while a lane waits on the API, where two
    # left a third of them idle in a chunked backlog (bench/RESULTS.md, issue 19).
    concurrency: int = field(default=3, metadata=_key("a worker's lanes", int))
    visibility_timeout: int = field(
        default=120, metadata=_key("seconds a read job stays hidden", int)
    )
    statement_timeout: float | None = field(
        default=300,
        metadata=_key(
            "statement_timeout (seconds) of the sessions that process batches (None: the "
            "database's)",
            *_NUMBER,
            None,
        ),
    )
    max_attempts: int = field(
        default=5, metadata=_key("attempts before a row is dead-lettered", int)
    )
    retry_backoff: float = field(
        default=5, metadata=_key("seconds before the first retry (doubling)", *_NUMBER)
    )
    retry_backoff_max: float = field(
        default=600, metadata=_key("the most seconds between retries", *_NUMBER)
    )
    schedule: str | None = field(
        default="1 seconds", metadata=_key("the pg_cron schedule (None: no job)", str, None)
    )
    endpoint_url: str | None = field(
        default=None, metadata=_key("the URL pg_net posts to", str, None)
    )
    endpoint_token: str | None = field(
        default=None, metadata=_key("the endpoint's bearer token (None: disabled)", str, None)
    )
    endpoint_max_body: int = field(
        default=1_048_576, metadata=_key("bytes a POST to the endpoint may hold", int)
    )
    endpoint_time_budget: float = field(
        default=25.0, metadata=_key("seconds the endpoint works on one POST", *_NUMBER)
    )
    push_rows_per_post: int = field(default=500, metadata=_key("rows a POST carries", int))
    push_max_posts: int = field(default=4, metadata=_key("POSTs a tick", int))
    push_timeout: float = field(
        default=30.0, metadata=_key("seconds pg_net waits for the endpoint", *_NUMBER)
    )
    push_split_packed: bool = field(
        default=False, metadata=_key("post one row a job (the guide's shape)", bool)
    )
    push_keep_responses: str = field(
        default="10 minutes", metadata=_key("how long pg_net's answers are kept", str)
    )
    text_search: str = field(
        default="english", metadata=_key("hybrid_search's text search configuration", str)
    )
    query_cache_size: int = field(default=256, metadata=_key("query embeddings kept", int))
    recent_vectors: int = field(
        default=4096, metadata=_key("vectors of recent texts kept per process", int)
    )
    index_defer_rows: int | None = field(
        default=1000,
        metadata=_key("a backlog that defers the HNSW index (None: never)", int, None),
    )
    chunk_processes: int | None = field(
        default=None,
        metadata=_key("processes that split long texts (None: a core each)", int, None),
    )
    index_build_memory: str = field(
        default="512MB", metadata=_key("maintenance_work_mem of a bulk build", str)
    )
    index_build_workers: int | None = field(
        default=None, metadata=_key("parallel workers of a bulk build", int, None)
    )
    index_lock_timeout: float | None = field(
        default=60,
        metadata=_key("seconds a drop or build waits for transactions", *_NUMBER, None),
    )
    tokens_per_minute: int | None = field(
        default=None, metadata=_key("the account's token limit a minute", int, None)
    )
    requests_per_minute: int | None = field(
        default=None, metadata=_key("the account's request limit a minute", int, None)
    )
    rate_limit_headers: bool = field(
        default=True, metadata=_key("learn the limits from x-ratelimit-* headers", bool)
    )
    vector_store_days: float = field(
        default=7, metadata=_key("days a vector is kept by its text's hash", *_NUMBER)
    )
    prices: dict[str, float] = field(
        default_factory=lambda: {
            "text-embedding-3-small": 0.02,
            "text-embedding-3-large": 0.13,
            "text-embedding-ada-002": 0.10,
        },
        metadata=_key("US dollars per million tokens, by model", dict),
    )
    batch_price: float = field(
        default=0.5, metadata=_key("the Batch API's share of the price", *_NUMBER)
    )
    batch_poll_seconds: float = field(
        default=60.0, metadata=_key("seconds between looks at Batch API jobs", *_NUMBER)
    )
    # OpenAI's enqueued-token limit for text-embedding-3-small at usage tier 1; higher
    # tiers allow more (docs: how-to 'A backfill at half price'), and a refusal lowers it.
    batch_queue_tokens: int = field(
        default=3_000_000,
        metadata=_key("tokens all batches of one model may hold at once (the account's)", int),
    )
    change_notice: float = field(
        default=30.0,
        metadata=_key(
            "seconds a model change waits before searches move to the new vectors, and again "
            "before the columns are swapped (every process must have seen the step)",
            *_NUMBER,
        ),
    )
    change_automatic_cutover: bool = field(
        default=True,
        metadata=_key(
            "a model change cuts over once its new vectors are complete (False: it waits for "
            "`autoembed_cutover`); recorded when the change's migration is applied",
            bool,
        ),
    )
    batch_fallback: bool = field(
        default=False,
        metadata=_key(
            "embed at full price through the embeddings API what the Batch API refuses", bool
        ),
    )


KEYS = {f.name.upper(): f for f in fields(AutoembedSettings)}


def default(key: str) -> Any:
    """The default of AUTOEMBED[``key``]."""
    spec = KEYS[key]
    if spec.default is MISSING:
        return spec.default_factory()  # type: ignore[operator]
    return spec.default


def parse(user: dict[str, Any]) -> AutoembedSettings:
    """The typed settings for an AUTOEMBED dict; ConfigurationError naming what is wrong."""
    if not isinstance(user, dict):
        raise ConfigurationError(
            f"AUTOEMBED is a {type(user).__name__}; make it a dict, e.g. "
            "AUTOEMBED = {'PROVIDER': 'openai'}."
        )
    values: dict[str, Any] = {}
    for key, value in user.items():
        spec = KEYS.get(key) if isinstance(key, str) else None
        if spec is None:
            close = difflib.get_close_matches(str(key), list(KEYS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"AUTOEMBED[{key!r}] is not a setting of django-autoembed.{hint} "
                f"Known keys: {', '.join(sorted(KEYS))}."
            )
        values[spec.name] = _checked(key, value, spec.metadata["types"])
    return AutoembedSettings(**values)


def _checked(key: str, value: Any, types: tuple[type | None, ...]) -> Any:
    if value is None and None in types:
        return None
    allowed = tuple(t for t in types if t is not None)
    fits = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not fits:
        names = " or ".join("None" if t is None else t.__name__ for t in types)
        raise ConfigurationError(
            f"AUTOEMBED[{key!r}] = {value!r} is a {type(value).__name__}; it takes {names} "
            f"(default {default(key)!r})."
        )
    if isinstance(value, dict):
        return dict(value)
    return value


_cache: tuple[dict[str, Any], AutoembedSettings] | None = None
_lock = threading.Lock()


def current() -> AutoembedSettings:
    """The AUTOEMBED settings in force now, parsed and checked once per distinct dict."""
    global _cache
    user = getattr(django_settings, "AUTOEMBED", None) or {}
    cached = _cache
    if cached is not None and cached[0] == user:
        return cached[1]
    parsed = parse(user)
    with _lock:
        _cache = (dict(user), parsed)
    return parsed
