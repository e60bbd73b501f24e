from django.contrib import admin
from django.urls import include, path

from example_project.documents import views

urlpatterns = [
    path("", views.index, name="index"),
    path("search", views.search, name="search"),
    path("admin/", admin.site.urls),
    path("autoembed/", include("django_autoembed.urls")),
]
