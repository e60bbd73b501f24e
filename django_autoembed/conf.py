"""The AUTOEMBED settings dict: defaults and the one reader."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Which provider embeds text: "openai", "local", or a dotted path to a class.
    "PROVIDER": "openai",
    "MODEL": "text-embedding-3-small",
    "DIMENSIONS": 1536,
    # OpenAI-compatible servers: base URL, key (falls back to OPENAI_API_KEY), timeouts.
    "BASE_URL": None,
    "API_KEY": None,
    "REQUEST_TIMEOUT": 30.0,
    "PROVIDER_RETRIES": 2,
    # pgmq queue the triggers write to.
    "QUEUE": "embedding_jobs",
    # Inputs sent in one embedding request, and requests in flight at once.
    "BATCH_SIZE": 100,
    "MAX_REQUESTS": 8,
    # Three lanes keep both of two cores busy while a lane waits on the API, where two
    # left a third of them idle in a chunked backlog (bench/RESULTS.md, issue 19).
    "CONCURRENCY": 3,
    # Seconds a read message stays invisible to other workers.
    "VISIBILITY_TIMEOUT": 120,
    # statement_timeout, in seconds, of the sessions that process batches (the worker's lanes,
    # the endpoint's batch), whatever guard rail the database or role sets for the
    # application (None: keep it). Index builds set no limit of their own.
    "STATEMENT_TIMEOUT": 300,
    "MAX_ATTEMPTS": 5,
    # Seconds before a failed job is retried: RETRY_BACKOFF * 2**(attempt-1), capped.
    "RETRY_BACKOFF": 5,
    "RETRY_BACKOFF_MAX": 600,
    # Push path: pg_cron schedule (None: no job), endpoint URL and bearer token.
    "SCHEDULE": "1 seconds",
    "ENDPOINT_URL": None,
    "ENDPOINT_TOKEN": None,
    "ENDPOINT_MAX_BODY": 1_048_576,
    "ENDPOINT_TIME_BUDGET": 25.0,
    # What one pg_cron tick posts: rows per POST, POSTs a tick, how long pg_net waits for the
    # endpoint (keep ENDPOINT_TIME_BUDGET below it), whether packed jobs are split one row a
    # job (the guide's shape), and how long pg_net's answers to our POSTs are kept.
    "PUSH_ROWS_PER_POST": 500,
    "PUSH_MAX_POSTS": 4,
    "PUSH_TIMEOUT": 30.0,
    "PUSH_SPLIT_PACKED": False,
    "PUSH_KEEP_RESPONSES": "10 minutes",
    # Text search configuration of hybrid_search for configs that declare no text_search.
    "TEXT_SEARCH": "english",
    # Query embeddings kept in memory for semantic_search.
    "QUERY_CACHE_SIZE": 256,
    # Vectors of texts embedded lately, kept per process (0: off): a row queued
    # twice or retried after a lock costs no second API call. ~3 KB each at 1536 dims.
    "RECENT_VECTORS": 4096,
    # A backlog of at least this many rows (and half what the index holds) is embedded with
    # the HNSW index dropped, which is then built again in bulk (None: keep it up row by row).
    "INDEX_DEFER_ROWS": 1000,
    # Processes that split a batch's long texts for chunked configs (None: one per core;
    # 0 or 1: split in the worker's own process).
    "CHUNK_PROCESSES": None,
    # maintenance_work_mem and max_parallel_maintenance_workers for that bulk build
    # (None: the server's own setting for the workers).
    "INDEX_BUILD_MEMORY": "512MB",
    "INDEX_BUILD_WORKERS": None,
    # Seconds dropping or building that index waits for transactions holding its table
    # before it gives up until a later tick (None: as long as they last).
    "INDEX_LOCK_TIMEOUT": 60,
    # The account's limits per model, shared by every worker (None: read from the provider's
    # x-ratelimit-* headers where RATE_LIMIT_HEADERS, else no pacing).
    "TOKENS_PER_MINUTE": None,
    "REQUESTS_PER_MINUTE": None,
    "RATE_LIMIT_HEADERS": True,
    # Days a vector is kept by the hash of its text, for any process to reuse (0: none kept
    # but the Batch API's).
    "VECTOR_STORE_DAYS": 7,
    # US dollars per million tokens, by model, for the cost estimates; the Batch API's share.
    "PRICES": {
        "text-embedding-3-small": 0.02,
        "text-embedding-3-large": 0.13,
        "text-embedding-ada-002": 0.10,
    },
    "BATCH_PRICE": 0.5,
    # Seconds between looks at Batch API jobs in flight (process_embeddings --batch-api).
    "BATCH_POLL_SECONDS": 60.0,
}


def get(key: str) -> Any:
    """Return the AUTOEMBED setting ``key``, read now so override_settings works."""
    user = getattr(settings, "AUTOEMBED", None) or {}
    return user.get(key, DEFAULTS[key])


def unknown_keys() -> list[str]:
    user = getattr(settings, "AUTOEMBED", None) or {}
    return sorted(set(user) - set(DEFAULTS))
