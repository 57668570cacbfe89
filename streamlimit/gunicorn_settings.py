"""gunicorn's settings from the environment, checked before gunicorn starts anything.

``gunicorn.conf.py`` reads them through ``read_gunicorn_settings``; a bad value
raises ``ImproperlyConfigured`` with one sentence naming the variable and what
it accepts, which the config prints as one line before exiting with status 2
(as ``streamlimit.startup`` does for Django's settings, which are checked first).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from streamlimit.cpus import available_cpus

WORKER_CLASSES = ("gevent", "gthread", "sync")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class GunicornSettings:
    """What gunicorn.conf.py hands gunicorn (see the README's configuration table)."""

    bind: str
    workers: int
    worker_class: str
    threads: int
    worker_connections: int
    timeout: int
    max_requests: int
    log_level: str


def read_gunicorn_settings() -> GunicornSettings:
    """Read and check HOST, PORT, LOG_LEVEL and every GUNICORN_* variable."""
    host = os.environ.get("HOST", "").strip() or "127.0.0.1"
    port = whole_number("PORT", 8080, 1, 65535)
    return GunicornSettings(
        bind=f"{bind_host(host)}:{port}",
        # One worker per CPU keeps the CPUs busy, the extra one covers a worker
        # busy in its own Python work when requests arrive (bench/README.md).
        workers=whole_number("GUNICORN_WORKERS", available_cpus() + 1, 1, 256),
        worker_class=one_of("GUNICORN_WORKER_CLASS", "gevent", WORKER_CLASSES),
        threads=whole_number("GUNICORN_THREADS", 1, 1, 1000),
        worker_connections=whole_number("GUNICORN_WORKER_CONNECTIONS", 1000, 1, 100_000),
        timeout=whole_number("GUNICORN_TIMEOUT", 30, 1, 3600),
        max_requests=whole_number("GUNICORN_MAX_REQUESTS", 100_000, 0, 1_000_000_000),
        log_level=one_of("LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
    )


def whole_number(name: str, default: int, low: int, high: int) -> int:
    """The variable as an int from ``low`` to ``high``; ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ImproperlyConfigured(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return value


def one_of(name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    """The variable if it is one of ``choices`` (compared lower-case, or upper-case); ``default`` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def bind_host(host: str) -> str:
    """``host`` as gunicorn's bind wants it (IPv6 in brackets); raises unless an IP address or a host name."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if _HOST_NAME.match(host):
            return host
        raise ImproperlyConfigured(
            f"HOST must be an IP address or a host name (such as 127.0.0.1, 0.0.0.0, :: or localhost), got {host!r}"
        ) from None
    return f"[{address}]" if address.version == 6 else str(address)
