"""Django settings for building the docs: the apps autodoc imports, no database reached."""

SECRET_KEY = "docs"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_autoembed",
    "example_project.documents",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "docs"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
