"""Routes of the landing page and the favicon."""

from django.urls import path

from streamlimit.home import views

app_name = "home"
urlpatterns = [
    path("", views.landing_page, name="landing"),
    path("favicon.ico", views.favicon, name="favicon"),
]
