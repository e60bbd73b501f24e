"""The example project's pages, admin and endpoint: the tests drive the real site.

Plus one route that fails as a broken deployment does (a 500 without the endpoint's
answer), for the push path's fault tests.
"""

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from example_project.urls import urlpatterns as site


@csrf_exempt
def broken(request):
    return HttpResponse("Internal Server Error", status=500)


urlpatterns = [*site, path("broken/", broken)]
