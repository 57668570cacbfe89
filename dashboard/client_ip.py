"""The client's address, for the staff login lockout (django-axes' ``AXES_CLIENT_IP_CALLABLE``)."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The address of the client that sent ``request``.

    Behind our proxy (``DJANGO_BEHIND_PROXY``) it is the last address of
    ``X-Forwarded-For``, the one our nginx wrote (deploy/nginx.conf replaces
    the header, so a client cannot put its own first); otherwise the TCP peer,
    since a header from a direct client proves nothing.
    """
    peer = request.META.get("REMOTE_ADDR", "")
    if not settings.BEHIND_PROXY:
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return peer
