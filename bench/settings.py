"""Settings for the benchmarks: the embedded Postgres, database ``autoembed_bench``."""

import environ

env = environ.Env()

SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["django_autoembed", "bench.benchapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if env("DATABASE_URL", default=None):
    DATABASES = {"default": env.db("DATABASE_URL")}
else:
    from django_autoembed.testing import postgres

    DATABASES = {"default": postgres.database("autoembed_bench")}

# The bench starts the loopback fake OpenAI server and hands its URL to worker
# subprocesses through AUTOEMBED_BENCH_BASE_URL.
AUTOEMBED = {
    "PROVIDER": "openai",
    "MODEL": "text-embedding-3-small",
    "DIMENSIONS": 1536,
    "API_KEY": "bench-key",
    "BASE_URL": env("AUTOEMBED_BENCH_BASE_URL", default="http://127.0.0.1:9/v1"),
    "PROVIDER_RETRIES": 0,
    # The push-path bench (bench.push) serves the endpoint behind gunicorn.
    "ENDPOINT_TOKEN": env("AUTOEMBED_BENCH_TOKEN", default=None),
    "ENDPOINT_URL": env("AUTOEMBED_BENCH_ENDPOINT", default=None),
    "ENDPOINT_TIME_BUDGET": env.float("AUTOEMBED_BENCH_TIME_BUDGET", default=25.0),
    # The vector store can be turned off to measure what it costs (AUTOEMBED_BENCH_STORE_DAYS=0).
    "VECTOR_STORE_DAYS": env.int("AUTOEMBED_BENCH_STORE_DAYS", default=7),
    # bench.ratelimit runs its baseline with pacing off.
    "RATE_LIMIT_HEADERS": env("AUTOEMBED_BENCH_RATE_HEADERS", default="on") != "off",
    # bench.batchapi looks at its batches often (the fake's batches end in seconds, not hours)
    # and sets the account's enqueued-token limit.
    "BATCH_POLL_SECONDS": env.float("AUTOEMBED_BENCH_BATCH_POLL", default=60.0),
    "BATCH_QUEUE_TOKENS": env.int("AUTOEMBED_BENCH_QUEUE_TOKENS", default=3_000_000),
    # bench.maintenance runs workers with the index kept up row by row ("none").
    "INDEX_DEFER_ROWS": (
        None
        if env("AUTOEMBED_BENCH_DEFER_ROWS", default="1000") == "none"
        else env.int("AUTOEMBED_BENCH_DEFER_ROWS", default=1000)
    ),
}
ROOT_URLCONF = "bench.urls"
# The endpoint is routed for bench.push, which sets its token; the other parts need none.
SILENCED_SYSTEM_CHECKS = ["autoembed.W003"]
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django_autoembed": {"level": "WARNING"}},
}
