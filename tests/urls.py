"""The example project's pages, admin and endpoint: the tests drive the real site.

Plus one route that fails as a broken deployment does (a 500 without the endpoint's
answer), for the push path's fault tests, and an async view that searches.
"""

from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from example_project.urls import urlpatterns as site


@csrf_exempt
def broken(request):
    return HttpResponse("Internal Server Error", status=500)


async def async_search(request):
    from tests.testapp.models import Document

    q = request.GET["q"]
    semantic = await Document.objects.asemantic_search(q, k=3)
    hybrid = await Document.objects.ahybrid_search(q, k=3)
    return JsonResponse(
        {
            "semantic": [d.title async for d in semantic],
            "hybrid": [d.title async for d in hybrid],
        }
    )


urlpatterns = [*site, path("broken/", broken), path("async-search/", async_search)]
