"""The one base of the operator commands: answers on stdout, logs on stderr, errors as CommandError.

Every ``manage.py`` command of the project derives from ``OperatorCommand``:

- its answer goes to stdout (with ``--json``, one JSON document that scripts read);
- the service's own log lines go to stderr while it runs, so they never mix with the answer;
- every failure (bad input, Redis or the database down, a usage error) is a ``CommandError``:
  from the shell one ``CommandError: ...`` line on stderr, nothing on stdout, and a non-zero exit;
- ``summary`` is the command's one-line description, the first line of its ``--help``.

Lives in the project package, not in an app, so that every app's commands can use it.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.utils import DatabaseError
from redis.exceptions import RedisError

from heartbeat.limiter.ids import InvalidIdError
from heartbeat.limiter.limits import LimitOutOfRangeError
from streamlimit.logging import SINK

# The exit status of a usage error (a bad flag or value), as argparse's own.
USAGE_ERROR_EXIT = 2


@contextmanager
def logs_on_stderr() -> Iterator[None]:
    """Send the service's log lines (structlog's and the stdlib's) to stderr meanwhile.

    stdout is the command's answer (``--json`` output is read by scripts). A
    structlog sink a test has pointed elsewhere is left alone.
    """
    redirected = SINK.target is None
    if redirected:
        SINK.target = sys.stderr.buffer
    moved = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout
    ]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(sys.stdout)
        if redirected:
            SINK.target = None


class OperatorCommand(BaseCommand):
    """A command whose Redis, input and usage errors end as one-line messages with a non-zero exit."""

    # One line: what the command does (the first line of its --help).
    summary: str = ""
    # The rest of the --help text, after the summary.
    details: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.summary:
            cls.help = f"{cls.summary} {cls.details}".strip()

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, whose usage errors raise CommandError (one line) even from the shell."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.called_from_command_line = False  # CommandParser.error raises CommandError then
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        """Django's, with a usage error reported as one ``CommandError`` line and exit status 2.

        Django parses the arguments outside its own ``CommandError`` handler,
        so a parser's CommandError would otherwise end in a traceback.
        """
        self._parsing = True
        try:
            super().run_from_argv(argv)
        except CommandError as exc:
            if not getattr(self, "_parsing", False) or "--traceback" in argv:
                raise
            # CommandParser says "Error: ..."; the line already starts "CommandError:".
            message = str(exc).removeprefix("Error: ")
            self.stderr.write(f"CommandError: {message} (see manage.py {argv[1]} --help)")
            sys.exit(USAGE_ERROR_EXIT)

    def execute(self, *args: Any, **options: Any) -> str | None:
        self._parsing = False
        with logs_on_stderr():
            try:
                return super().execute(*args, **options)
            except RedisError as exc:
                raise CommandError(f"Redis is unreachable or failed: {exc}") from exc
            except DatabaseError as exc:  # the audit trail's database (not migrated, down)
                raise CommandError(f"The database failed: {exc}") from exc
            except (InvalidIdError, LimitOutOfRangeError) as exc:
                raise CommandError(str(exc)) from exc

    def write_json(self, data: Any) -> None:
        """Write ``data`` as one JSON document on stdout (the ``--json`` answer)."""
        self.stdout.write(json.dumps(data, ensure_ascii=False))


def add_json_argument(parser: CommandParser, what: str = "one JSON object, for scripts") -> None:
    """``--json``: the answer as one JSON document instead of text."""
    parser.add_argument("--json", action="store_true", help=what)


def add_operator_argument(parser: CommandParser) -> None:
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
