"""URL routes: the player API, the staff dashboard, the admin, the API docs and the landing page."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from heartbeat.api.probes import healthz, metrics, readyz
from heartbeat.api.views import HeartbeatView, SessionsView, StopView

urlpatterns = [
    # With or without a trailing slash, and no redirect: players POST. The
    # slash variants are the same views, left out of the OpenAPI schema.
    path("heartbeat", HeartbeatView.as_view(), name="heartbeat"),
    path("heartbeat/", HeartbeatView.as_view(schema=None)),
    path("heartbeat/stop", StopView.as_view(), name="heartbeat-stop"),
    path("heartbeat/stop/", StopView.as_view(schema=None)),
    path("sessions", SessionsView.as_view(), name="sessions"),
    path("sessions/", SessionsView.as_view(schema=None)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file (?script), not inline: see the CSP.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api_docs/swagger_ui.html"),
        name="api-docs",
    ),
    # Before dashboard/: the webhooks app's page lives in the dashboard's look (webhooks/views.py).
    path("dashboard/webhooks/", include("webhooks.urls")),
    path("dashboard/", include("dashboard.urls")),
    # 404 unless STREAMLIMIT_DEMO is on.
    path("demo/", include("demo.urls")),
    path("admin/", admin.site.urls),
    # The landing page and /favicon.ico.
    path("", include("streamlimit.home.urls")),
]

# JSON on the player paths and probes, Django's pages elsewhere.
handler400 = "heartbeat.api.errors.bad_request"
handler404 = "heartbeat.api.errors.not_found"
handler500 = "heartbeat.api.errors.server_error"
