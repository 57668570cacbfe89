"""Operator endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from heartbeat.api.errors import method_not_allowed
from heartbeat.api.scrape import render_metrics
from heartbeat.edge.metrics_access import metrics_allowed
from heartbeat.limiter.metrics import REDIS_ERRORS
from heartbeat.services import get_stream_manager

logger = structlog.get_logger(__name__)


def json_safe_methods(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """GET and HEAD only; any other method gets a JSON 405 with ``Allow``, like the player endpoints."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed(("GET", "HEAD"))
        return view(request)

    return wrapper


@json_safe_methods
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answering, and which version it runs; touches nothing else (no Redis call)."""
    return JsonResponse({"status": "ok", "version": settings.STREAMLIMIT_VERSION})


@json_safe_methods
def readyz(request: HttpRequest) -> JsonResponse:
    """A heartbeat could be admitted now: the admit script runs on a canary key (see ``check_ready``)."""
    readiness = get_stream_manager().check_ready()
    if not readiness.ready:
        REDIS_ERRORS.labels("readyz").inc()
        # The detail (Redis' own error text, a script's SHA) is for the log only:
        # anyone may call /readyz, and learns the reason code alone.
        logger.warning("not ready", reason=readiness.reason, error=readiness.detail)
        return JsonResponse({"status": "not_ready", "reason": readiness.reason, "code": readiness.reason}, status=503)
    return JsonResponse({"status": "ready", "redis": "ok", "scripts": "loaded", "writes": "ok"})


@json_safe_methods
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, summed over every gunicorn worker."""
    if not metrics_allowed(request):
        return JsonResponse({"code": "forbidden", "message": "Not allowed to read metrics."}, status=403)
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
