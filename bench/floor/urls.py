"""One route: POST /heartbeat."""

from django.urls import path

from bench.floor.views import heartbeat

urlpatterns = [path("heartbeat", heartbeat)]
