"""Shared behaviour of the operator commands: clear errors instead of tracebacks."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from heartbeat.limiter.ids import InvalidIdError
from heartbeat.limiter.limits import LimitOutOfRangeError
from streamlimit.logging import SINK


class OperatorCommand(BaseCommand):
    """A command whose Redis and input errors end as one-line messages with a non-zero exit."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        # stdout is the command's answer (``--json`` output is read by scripts);
        # the service's own log lines go to stderr meanwhile. A sink a test
        # has pointed elsewhere is left alone.
        redirected = SINK.target is None
        if redirected:
            SINK.target = sys.stderr.buffer
        try:
            return super().execute(*args, **options)
        except RedisError as exc:
            raise CommandError(f"Redis is unreachable or failed: {exc}") from exc
        except (InvalidIdError, LimitOutOfRangeError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if redirected:
                SINK.target = None


def add_operator_argument(parser: Any) -> None:
    """``--operator``: the name recorded in the audit trail."""
    parser.add_argument(
        "--operator",
        default=None,
        help="your name, for the audit trail (default: the login name running the command)",
    )


def operator_name(options: dict[str, Any]) -> str:
    """The audit name of the operator running a command."""
    name = options.get("operator") or os.environ.get("SUDO_USER") or getpass.getuser()
    return f"cli:{name}"[:150]


# Unicode's isolates for plain text (the terminal's <bdi>): right-to-left
# letters in an id cannot reorder the text around it.
FIRST_STRONG_ISOLATE = "\u2068"
POP_DIRECTIONAL_ISOLATE = "\u2069"


def isolate(value: str) -> str:
    """An id as the commands print it: between FSI and PDI."""
    return f"{FIRST_STRONG_ISOLATE}{value}{POP_DIRECTIONAL_ISOLATE}"


def id_argument(value: str) -> str:
    """An id given on the command line; one copied from our own output comes without its isolates."""
    if value.startswith(FIRST_STRONG_ISOLATE) and value.endswith(POP_DIRECTIONAL_ISOLATE):
        return value[1:-1]
    return value
