"""gunicorn configuration for StreamLimit: ``make run``, the Docker image and ``streamlimit serve``.

The repository's ``gunicorn.conf.py`` imports this module, and ``streamlimit
serve`` hands it to gunicorn as ``--config python:streamlimit.gunicorn_config``,
so a checkout and an installed package run with the same configuration.
Each value can be changed by an environment variable; see the README.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from streamlimit.gunicorn_settings import read_gunicorn_settings
from streamlimit.logging import build_logging_config
from streamlimit.startup import EXIT_BAD_SETTING, check_settings_in_a_child

# A bad setting stops the master with one line, before any worker boots; the
# check runs in a child, so that this master never imports Django (see there).
check_settings_in_a_child("gunicorn")

try:
    SETTINGS = read_gunicorn_settings()
except ImproperlyConfigured as error:
    # One line an operator can act on, not gunicorn's traceback of this file.
    print(f"gunicorn: configuration error: {error}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_SETTING)

bind = SETTINGS.bind
# gevent: each connection is a greenlet, so a client that sends its request a
# byte a second (or a thousand of them) holds no worker, and a request waiting
# on Redis does not hold up /healthz. Sync workers are one request at a time:
# three slow clients stopped an instance (bench/README.md, "Worker model").
# gevent is our subclass of gunicorn's: past worker_connections it sheds the
# oldest connections that wait on their client (streamlimit/gevent_worker.py).
worker_class = {"gevent": "streamlimit.gevent_worker.SheddingGeventWorker"}.get(
    SETTINGS.worker_class, SETTINGS.worker_class
)
# One worker per CPU the container may use (cgroup quota, affinity) plus one.
workers = SETTINGS.workers
threads = SETTINGS.threads
# Connections at once per gevent worker, slow ones included; past this the
# worker sheds its oldest idle connections (those waiting on their client).
worker_connections = SETTINGS.worker_connections
timeout = SETTINGS.timeout
graceful_timeout = 20
# Idle keep-alive connections close after this; under gevent it also bounds
# the time a client may take to send its request line and headers.
keepalive = 5
# Recycle workers now and then so a slow leak can never grow without bound.
max_requests = SETTINGS.max_requests
max_requests_jitter = max_requests // 10
# Request line and headers, set on purpose (README, "Slow clients, workers and
# request limits"). A longer line gets 414, more or longer header fields 431,
# from gunicorn itself. The longest legitimate line is a staff login redirect
# carrying a 128-character user id encoded twice (about 2,000 bytes); players
# send about 30.
limit_request_line = 4094
# Browsers send about 20 fields, a proxy adds a few (X-Forwarded-*).
limit_request_fields = 50
# A staff cookie or a bearer token fits; the same as nginx's 8 KB header buffers.
limit_request_field_size = 8190
# The application logs one JSON line per request; gunicorn's own lines are JSON too.
accesslog = None
logger_class = "streamlimit.gunicorn_logger.AppLogsRequests"
logconfig_dict = build_logging_config(SETTINGS.log_level)
# gunicorn attaches its own plain-text handlers to these; replace them.
logconfig_dict["loggers"].update(
    {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
    }
)
# The control socket (gunicorn 24+) is not used, and a read-only home would break it.
control_socket_disable = True

# Prometheus metrics are summed over all workers through files in this folder
# (prometheus-client's multiprocess mode); it must be set before any worker
# imports prometheus_client, so it is set here, in the master.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix="streamlimit-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR
else:
    _OWN_METRICS_DIR = None


def on_starting(server):
    """Start every run with empty metrics: old files would add up to stale totals."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    if (
        not os.environ.get("PLAYBACK_TOKEN_KEYS", "").strip()
        and not os.environ.get("PLAYBACK_TOKEN_JWKS_FILE", "").strip()
    ):
        server.log.warning(
            "playback tokens are off (no PLAYBACK_TOKEN_KEYS or PLAYBACK_TOKEN_JWKS_FILE): "
            "anyone who knows an account id can lock that account out or stop its sessions"
        )
    elif os.environ.get("PLAYBACK_TOKENS_REQUIRED", "").strip().lower() in ("0", "false", "no", "off"):
        server.log.warning(
            "playback tokens are optional (PLAYBACK_TOKENS_REQUIRED=false): requests without one are served, "
            "so anyone who knows an account id can still lock that account out or stop its sessions"
        )


def child_exit(server, worker):
    """Let a dead worker's live gauges go (its counters still count)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder this master made for itself."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)


def post_worker_init(worker):
    """Import the URLconf, and the views it names, before this worker's first request rather than during it.

    Django imports it on the first request that resolves a path: most of a second during which the
    worker answers nothing else. Under an attack (issue 19) a worker that had not served a request
    yet held every probe it had accepted that long.
    """
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018  (the property imports the URLconf)
