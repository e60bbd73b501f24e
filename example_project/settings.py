"""Settings of the example site, read from the environment with django-environ.

With no DATABASE_URL it runs on an embedded Postgres; with no OPENAI_API_KEY it
embeds with the local all-MiniLM-L6-v2 model (384 dimensions). With a key it
asks text-embedding-3-small for 384 dimensions, so the schema is the same.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent
env = environ.Env(DEBUG=(bool, True))

SECRET_KEY = env("SECRET_KEY", default="example-only-not-secret")
DEBUG = env("DEBUG")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_autoembed",
    "example_project.documents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
WSGI_APPLICATION = "example_project.wsgi.application"

if env("DATABASE_URL", default=None):
    DATABASES = {"default": env.db("DATABASE_URL")}
else:
    from django_autoembed.testing import postgres

    DATABASES = {"default": postgres.database("autoembed_example")}

OPENAI_API_KEY = env("OPENAI_API_KEY", default=None)
AUTOEMBED = {
    "PROVIDER": "openai" if OPENAI_API_KEY else "local",
    "MODEL": "text-embedding-3-small" if OPENAI_API_KEY else "all-MiniLM-L6-v2",
    "DIMENSIONS": 384,
    "API_KEY": OPENAI_API_KEY,
    "BASE_URL": env("OPENAI_BASE_URL", default=None),
    "ENDPOINT_URL": env("AUTOEMBED_ENDPOINT_URL", default=None),
    "ENDPOINT_TOKEN": env("AUTOEMBED_ENDPOINT_TOKEN", default=None),
}

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_autoembed": {
            "handlers": ["console"],
            "level": env("AUTOEMBED_LOG_LEVEL", default="WARNING"),
        }
    },
}
