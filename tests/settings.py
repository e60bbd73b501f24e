"""Settings for the test suite: a real Postgres (embedded unless DATABASE_URL is set)."""

import environ

env = environ.Env()

SECRET_KEY = "tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_autoembed",
    "tests.testapp",
    "example_project.documents",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The push-path tier (scripts/test.sh runs it as a second pass) uses Postgres 17
# with real pg_cron and pg_net; where that cannot run, its tests skip with this reason.
PUSH_TIER_SKIP: str | None = "run by scripts/test.sh in its own pass (AUTOEMBED_PUSH_TIER=1)"
if env.bool("AUTOEMBED_PUSH_TIER", default=False):
    from tests.pgcron import server as pgcron_server

    try:
        params = pgcron_server.start("test_autoembed_push")
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                **params,
                "NAME": "autoembed_push",
                "TEST": {"NAME": "test_autoembed_push"},
            }
        }
        PUSH_TIER_SKIP = None
    except pgcron_server.Unavailable as exc:
        PUSH_TIER_SKIP = f"pg_cron/pg_net tier unavailable: {exc}"

if "DATABASES" in globals():
    pass
elif env("DATABASE_URL", default=None):
    DATABASES = {"default": env.db("DATABASE_URL")}
else:
    from django_autoembed.testing import postgres

    DATABASES = {"default": postgres.database("autoembed_tests")}

# A second database on the same server: testapp.RemoteDoc lives there, with its own
# queue and this app's tables (tests/testapp/routers.py).
_other: dict = {**DATABASES["default"], "NAME": f"{DATABASES['default']['NAME']}_other"}
if "postgres" in globals():  # the embedded server: make that database too, as for the default
    _other.update(postgres.database(_other["NAME"]))
if "TEST" in _other:
    _other["TEST"] = {"NAME": _other["TEST"]["NAME"] + "_other"}
DATABASES["other"] = _other
DATABASE_ROUTERS = ["tests.testapp.routers.RemoteRouter"]

# Subprocesses started by the tests connect straight to the test databases, as the
# role a test chooses.
if env("AUTOEMBED_TEST_DB", default=None):
    DATABASES["default"]["NAME"] = env("AUTOEMBED_TEST_DB")
if env("AUTOEMBED_TEST_OTHER_DB", default=None):
    DATABASES["other"]["NAME"] = env("AUTOEMBED_TEST_OTHER_DB")
if env("AUTOEMBED_TEST_DB_USER", default=None):
    for alias in DATABASES:
        DATABASES[alias].update(
            USER=env("AUTOEMBED_TEST_DB_USER"),
            PASSWORD=env("AUTOEMBED_TEST_DB_PASSWORD", default=""),
        )

# The fake OpenAI server's URL is set by tests/conftest.py (and handed to worker
# subprocesses through AUTOEMBED_TEST_BASE_URL).
AUTOEMBED = {
    "PROVIDER": "openai",
    "MODEL": "text-embedding-3-small",
    "DIMENSIONS": 1536,
    "API_KEY": "test-key",
    "BASE_URL": env("AUTOEMBED_TEST_BASE_URL", default="http://127.0.0.1:9/v1"),
    "REQUEST_TIMEOUT": 5.0,
    "PROVIDER_RETRIES": 0,
    "RETRY_BACKOFF": 0,
    "ENDPOINT_TOKEN": "test-token",
    # Batch API jobs in the fake end within a second or two: look at them often.
    "BATCH_POLL_SECONDS": 0.2,
}
STATIC_URL = "static/"
# A test that runs manage.py as a subprocess passes its own AUTOEMBED keys as JSON.
AUTOEMBED.update(env.json("AUTOEMBED_TEST_OVERRIDES", default={}))
