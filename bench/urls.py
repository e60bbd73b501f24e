"""The endpoint the push-path bench serves behind gunicorn, and a route that fails as a broken
deployment does (a 500 without the endpoint's answer) for its fault runs."""

from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def broken(request):
    return HttpResponse("Internal Server Error", status=500)


urlpatterns = [path("autoembed/", include("django_autoembed.urls")), path("broken/", broken)]
