from django.urls import include, path

urlpatterns = [path("autoembed/", include("django_autoembed.urls"))]
