"""Who may read /metrics: the right bearer token, or a client in an allowed network.

Asked by the probe itself and by the Host check (Prometheus scrapes each
replica by its address and cannot set Host).
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest


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
