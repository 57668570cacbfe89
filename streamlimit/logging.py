"""JSON logging: one object per line on stdout, shared by structlog and stdlib loggers.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``message`` and
``hostname``; request lines add the fields bound by
``streamlimit.middleware`` (``correlationId``, ``url``, ``reqBody``, ``status``).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from typing import Any

import orjson
import structlog

from heartbeat.adapters.stdlib_logging import skip_caller_lookup

_HOSTNAME = socket.gethostname()


def add_hostname(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Add the host name to every line (a processor, since django-structlog clears contextvars)."""
    event_dict["hostname"] = _HOSTNAME
    return event_dict


def render_stack(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Render ``exc_info`` as a plain-text ``stack`` field, the name operators search for."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if exc_info and exc_info[0] is not None:
            event_dict["stack"] = structlog.processors.format_exc_info(None, "", {"exc_info": exc_info})["exception"]
    return event_dict


# (second since the epoch, that second as "YYYY-MM-DDTHH:MM:SS"), swapped as one value.
_SECOND: tuple[int, str] = (-1, "")


def iso_utc(epoch_ns: int) -> str:
    """A time in ISO 8601, UTC, to the microsecond, as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it.

    ``2026-11-29T16:21:52.766059Z``; no fraction when it is 0, as
    ``datetime.isoformat``. The part up to the second is formatted once per
    second: TimeStamper builds and formats a datetime for every line.
    """
    global _SECOND
    second, nanoseconds = divmod(epoch_ns, 1_000_000_000)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    micro = nanoseconds // 1000
    return f"{cached[1]}.{micro:06d}Z" if micro else f"{cached[1]}Z"


def add_timestamp(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Add ``timestamp``, now (see ``iso_utc``), to every line."""
    event_dict["timestamp"] = iso_utc(time.time_ns())
    return event_dict


_MIN_LEVEL = logging.INFO
_PROBE_REQUESTS = frozenset({"GET /healthz", "GET /readyz", "GET /metrics"})


def drop_probe_lines(_logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the info lines of successful probes and scrapes: they come every few seconds.

    Failures (4xx, 5xx) are kept, and LOG_LEVEL=DEBUG keeps everything.
    """
    if method in ("info", "debug") and event_dict.get("request") in _PROBE_REQUESTS and _MIN_LEVEL > logging.DEBUG:
        raise structlog.DropEvent
    return event_dict


def render_json(_logger: Any, _method: str, event_dict: dict[str, Any]) -> str:
    """Serialise with orjson (fast, and ``default=str`` keeps odd values loggable)."""
    return orjson.dumps(event_dict, default=str).decode()


def render_json_bytes(_logger: Any, _method: str, event_dict: dict[str, Any]) -> bytes:
    """The same, as bytes for structlog's BytesLogger."""
    return orjson.dumps(event_dict, default=str)


class StdoutSink:
    """Where structlog's own lines go: stdout, looked up at each write.

    Looked up late so that a test can point ``target`` at a buffer; structlog
    caches its loggers with the file they were given.
    """

    target: Any = None

    def write(self, data: bytes) -> None:
        (self.target or sys.stdout.buffer).write(data)

    def flush(self) -> None:
        (self.target or sys.stdout.buffer).flush()


SINK = StdoutSink()

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    add_timestamp,
    add_hostname,
]


def build_logging_config(level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict: a JSON formatter for structlog's and foreign lines alike."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    render_stack,
                    structlog.processors.EventRenamer("message"),
                    render_json,
                ],
                "foreign_pre_chain": [*_SHARED_PROCESSORS, structlog.stdlib.ExtraAdder()],
            },
        },
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "django.server": {"level": "WARNING"},
            "gunicorn.access": {"level": "WARNING"},
        },
    }


def configure_structlog(level: str) -> None:
    """Render structlog's lines to JSON in structlog itself, straight to stdout.

    Going through stdlib logging and ProcessorFormatter costs about three
    times as much per line, and every heartbeat logs one; lines below
    ``level`` are dropped before any work. Stdlib loggers (Django, gunicorn,
    warnings) still go through ``build_logging_config``'s formatter, so every
    line on stdout is the same JSON.
    """
    global _MIN_LEVEL
    _MIN_LEVEL = level_number(level)
    # Python warnings become log lines too, so stdout stays one JSON object per line.
    logging.captureWarnings(True)
    # No line shows the caller's file, thread or process, so the logging HOWTO's
    # optimisations apply: skip collecting them for every stdlib record.
    skip_caller_lookup()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            drop_probe_lines,
            add_timestamp,
            add_hostname,
            render_stack,
            structlog.processors.EventRenamer("message"),
            render_json_bytes,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_MIN_LEVEL),
        logger_factory=structlog.BytesLoggerFactory(file=SINK),
        cache_logger_on_first_use=True,
    )


def level_number(name: str) -> int:
    """The stdlib number of a level name such as ``"INFO"``."""
    return logging.getLevelNamesMapping()[name]
