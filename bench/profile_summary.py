"""Summarise a py-spy raw profile of the gunicorn workers: where a request's CPU time goes.

Usage: ``.venv/bin/python bench/profile_summary.py bench/results/latest/profile.txt [TOP]``

The profile is what ``PROFILE=1 bash bench/run.sh`` records (py-spy ``record
--format raw --subprocesses``: one line per distinct stack, then its sample
count; idle time is not sampled, so samples are CPU time). Only stacks inside
a worker's connection handler (gunicorn's ``*Worker.handle``: HTTP parsing,
the WSGI app, writing the response) count; percentages are of those samples.

Prints the TOP functions (default 25) by inclusive time (the function and
everything it calls; a function is counted once per stack even when it
recurses) with their self time, the TOP by self time, then the time of each
layer of the heartbeat path on its own (gunicorn, Django, request logging,
DRF, the view, redis-py, logging, metrics), then self time by package.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# The frame that wraps all the work of one connection, for each worker class.
REQUEST_ROOT = re.compile(r"^(SyncWorker|ThreadWorker|GeventWorker|EventletWorker)\.handle \(")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")

PACKAGES = [
    ("django_structlog/", "django-structlog"),
    ("structlog/", "structlog"),
    ("rest_framework/", "DRF"),
    ("django/", "Django"),
    ("redis/", "redis-py"),
    ("django_redis/", "django-redis"),
    ("gunicorn/", "gunicorn"),
    ("prometheus_client/", "prometheus_client"),
    ("heartbeat/", "app: heartbeat"),
    ("streamlimit/", "app: streamlimit"),
    ("logging/", "stdlib logging"),
    ("json/", "stdlib json"),
]


# Each sample goes to the innermost of these frames in its stack: the time of
# each layer on its own, without the layers it calls. (pattern on the frame
# text, component name)
COMPONENTS = [
    (r"^(SyncWorker|ThreadWorker|GeventWorker|EventletWorker)\.handle \(", "gunicorn: read+parse HTTP, write, close"),
    (r"^WSGIHandler\.__call__ \(", "Django WSGI handler: request/response objects, signals"),
    (r"^RequestMiddleware\.__call__ \(django_structlog/", "request-log middleware (own work)"),
    (r"^(Player)?RequestLogMiddleware\.(__call__|log_player_request) \(heartbeat/", "request-log middleware"),
    (r"^BaseHandler\._get_response \(", "Django: URL resolve, view call"),
    (r"^APIView\.dispatch \(rest_framework/", "DRF: Request wrap, initial, finalize_response"),
    (r"^_PlayerAPIView\.dispatch \(heartbeat/", "player view dispatch: Allow header, finalize_response"),
    (r"^\w+View\.post \(heartbeat/", "heartbeat view: parse JSON, validate ids, build answer"),
    (r"^StreamManager\.admit \(heartbeat/", "StreamManager.admit: keys, result"),
    (r"^ScriptRunner\.run \(heartbeat/", "redis-py: the EVALSHA round trip: pack, send, read, parse"),
    (r"^TokenVerifier\.verify \(heartbeat/", "playback token: cache lookup, PyJWT verification"),
    (r"^(Histogram|Counter|Gauge|MetricWrapperBase|_?Timer)\S* \(prometheus_client/", "prometheus_client metrics"),
    (r"^Signal\.send", "Django signals (request_started/finished receivers)"),
    (r"\((structlog|logging)/", "logging: structlog + stdlib (build, format, write a line)"),
]
_COMPONENT_PATTERNS = [(re.compile(p), name) for p, name in COMPONENTS]


def component(frames: list[str]) -> str:
    """The name of the innermost component frame of a stack (root first)."""
    found = "other"
    for frame in frames:
        for pattern, name in _COMPONENT_PATTERNS:
            if pattern.search(frame):
                found = name
                break
    return found


def package(path: str) -> str:
    """A readable package name for a source file path as py-spy prints it."""
    for prefix, name in PACKAGES:
        if path.startswith(prefix) or f"/{prefix}" in path:
            return name
    return "stdlib/other: " + path.split("/")[0]


def function_key(frame: str) -> tuple[str, str]:
    """(``function (file)``, file) for a frame such as ``f (pkg/mod.py:12)``."""
    match = FRAME.match(frame)
    if not match:
        return frame, frame
    return f"{match['func']} ({match['file']})", match["file"]


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    top = int(argv[1]) if len(argv) > 1 else 25
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    total = outside = 0
    for line in Path(argv[0]).read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        roots = [i for i, f in enumerate(frames) if REQUEST_ROOT.match(f)]
        if not roots:
            outside += count
            continue
        frames = frames[roots[0] :]
        total += count
        keys = [function_key(f) for f in frames]
        for key in {k for k, _ in keys}:
            inclusive[key] += count
        leaf, leaf_file = keys[-1]
        self_time[leaf] += count
        by_package[package(leaf_file)] += count
        by_component[component(frames)] += count
    if not total:
        sys.exit("no samples inside a worker's request handler")

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    print(f"{total} samples in request handling, {outside} outside it (accept loop, master, start-up)\n")
    print(f"{'incl':>6} {'self':>6}  function (file)")
    for key, count in inclusive.most_common(top):
        print(f"{pct(count)} {pct(self_time[key])}  {key}")
    print(f"\n{'self':>6}  function (file), by self time")
    for key, count in self_time.most_common(top):
        print(f"{pct(count)}  {key}")
    print(f"\n{'own':>6}  layer (each sample goes to the innermost of these frames in its stack)")
    for name, count in by_component.most_common():
        print(f"{pct(count)}  {name}")
    print(f"\n{'self':>6}  package (by the file of the innermost Python frame)")
    for name, count in by_package.most_common():
        print(f"{pct(count)}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
