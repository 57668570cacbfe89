"""The dashboard's webhooks page (mounted under /dashboard/webhooks/)."""

from django.urls import path

from webhooks import views

app_name = "webhooks"
urlpatterns = [
    path("", views.health, name="health"),
    path("dead-letters/<int:letter_id>/retry/", views.retry, name="retry"),
]
