"""Demo routes. They answer 404 unless STREAMLIMIT_DEMO is on (see demo.views)."""

from django.urls import path

from demo import views

app_name = "demo"
urlpatterns = [
    path("", views.player_page, name="player"),
    path("token", views.demo_token, name="token"),
]
