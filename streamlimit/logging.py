"""JSON logging: one object per line on stdout, shared by structlog and stdlib loggers.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``message`` and
``hostname``; request lines add the fields bound by
``streamlimit.middleware`` (``correlationId``, ``url``, ``reqBody``, ``status``).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import orjson
import structlog

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
            import sys

            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if exc_info and exc_info[0] is not None:
            event_dict["stack"] = structlog.processors.format_exc_info(None, "", {"exc_info": exc_info})["exception"]
    return event_dict


_PROBE_REQUESTS = frozenset({"GET /healthz", "GET /readyz", "GET /metrics"})


def drop_probe_lines(_logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the info lines of successful probes and scrapes: they come every few seconds.

    Failures (4xx, 5xx) are kept, and LOG_LEVEL=DEBUG keeps everything.
    """
    if (
        method in ("info", "debug")
        and event_dict.get("request") in _PROBE_REQUESTS
        and logging.getLogger().getEffectiveLevel() > logging.DEBUG
    ):
        raise structlog.DropEvent
    return event_dict


def render_json(_logger: Any, _method: str, event_dict: dict[str, Any]) -> str:
    """Serialise with orjson (fast, and ``default=str`` keeps odd values loggable)."""
    return orjson.dumps(event_dict, default=str).decode()


_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
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


def configure_structlog() -> None:
    """Route structlog through stdlib logging so one formatter renders every line."""
    # Python warnings become log lines too, so stdout stays one JSON object per line.
    logging.captureWarnings(True)
    # No line shows the caller's file, thread or process, so the logging HOWTO's
    # optimisations apply: skip collecting them for every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    structlog.configure(
        processors=[
            # Drops lines below the logger's level before any other work is done.
            structlog.stdlib.filter_by_level,
            drop_probe_lines,
            *_SHARED_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def level_number(name: str) -> int:
    """The stdlib number of a level name such as ``"INFO"``."""
    return logging.getLevelNamesMapping()[name]
