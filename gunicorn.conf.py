"""gunicorn configuration for StreamLimit (``make run`` and the Docker image).

Each value can be changed by an environment variable; see the README.
"""

import os
import shutil
import tempfile
from pathlib import Path

from streamlimit.logging import build_logging_config
from streamlimit.startup import load_settings_or_exit

# A bad setting stops the master with one line, before any worker boots.
load_settings_or_exit("gunicorn")

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8080')}"
# The heartbeat is short: one Redis round trip, during which the worker waits.
# One worker per core plus one keeps the cores busy through those waits; more
# only add switching (bench/README.md: 3 workers beat 4 and 5 on 2 cores).
workers = int(os.environ.get("GUNICORN_WORKERS", str((os.cpu_count() or 1) + 1)))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so a slow leak can never grow without bound.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "100000"))
max_requests_jitter = max_requests // 10
# The application logs one JSON line per request; gunicorn's own lines are JSON too.
accesslog = None
logger_class = "streamlimit.gunicorn_logger.AppLogsRequests"
logconfig_dict = build_logging_config(os.environ.get("LOG_LEVEL", "INFO").upper())
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
