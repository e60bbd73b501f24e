"""The example project's pages, admin and endpoint: the tests drive the real site."""

from example_project.urls import urlpatterns

__all__ = ["urlpatterns"]
