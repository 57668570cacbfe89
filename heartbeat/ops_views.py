"""Operator endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
import ipaddress

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from heartbeat.metrics import REDIS_ERRORS, render_metrics
from heartbeat.services import get_stream_manager

logger = structlog.get_logger(__name__)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answering, and which version it runs; touches nothing else (no Redis call)."""
    return JsonResponse({"status": "ok", "version": settings.STREAMLIMIT_VERSION})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Redis answers and the Lua scripts are in its cache (loaded here if Redis lost them)."""
    manager = get_stream_manager()
    try:
        manager.ping()
        if not manager.scripts_loaded():
            # After a Redis restart nothing else would load them until traffic
            # arrives, and no traffic arrives while the probe says not ready.
            manager.load_scripts()
    except RedisError as exc:
        REDIS_ERRORS.labels("readyz").inc()
        logger.warning("not ready", reason="redis_unreachable", error=str(exc))
        return JsonResponse({"status": "not_ready", "reason": f"Redis does not answer: {exc}"}, status=503)
    return JsonResponse({"status": "ready", "redis": "ok", "scripts": "loaded"})


def metrics_allowed(request: HttpRequest) -> bool:
    """Whether this client may read /metrics (right bearer token, or an allowed network)."""
    token = settings.METRICS_BEARER_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(client in network for network in settings.METRICS_ALLOWED_NETWORKS)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, summed over every gunicorn worker."""
    if not metrics_allowed(request):
        return JsonResponse({"code": "forbidden", "message": "Not allowed to read metrics."}, status=403)
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
