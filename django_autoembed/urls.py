from django.urls import path

from . import views

app_name = "django_autoembed"
urlpatterns = [path("embed/", views.embed, name="embed")]
