"""URL routes: the player API, the staff dashboard, the admin and the API docs."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from heartbeat.views import HeartbeatView, StopView

urlpatterns = [
    # With or without a trailing slash, and no redirect: players POST.
    re_path(r"^heartbeat/?$", HeartbeatView.as_view(), name="heartbeat"),
    re_path(r"^heartbeat/stop/?$", StopView.as_view(), name="heartbeat-stop"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("dashboard/", include("dashboard.urls")),
    path("admin/", admin.site.urls),
]
