from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from example_project.documents import views

urlpatterns = [
    path("", views.index, name="index"),
    path("search", views.search, name="search"),
    path("admin/", admin.site.urls),
]

# The push path's endpoint (pg_cron -> pg_net -> this view) is routed only when it
# has a token to check; set AUTOEMBED_ENDPOINT_TOKEN to turn it on.
if settings.AUTOEMBED.get("ENDPOINT_TOKEN"):
    urlpatterns.append(path("autoembed/", include("django_autoembed.urls")))
