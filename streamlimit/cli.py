"""The ``streamlimit`` console command of an installed package.

``streamlimit COMMAND ...`` is ``manage.py COMMAND ...`` (``check``,
``migrate``, ``collectstatic``, ``issue_token``, ``check_service``...);
``streamlimit serve [gunicorn options]`` starts gunicorn with the project's
configuration (``streamlimit/gunicorn_config.py``), as ``make run`` and the
Docker image do.
"""

from __future__ import annotations

import os
import sys

SETTINGS_MODULE = "streamlimit.settings"
CONFIG = "python:streamlimit.gunicorn_config"
APPLICATION = "streamlimit.wsgi:application"
USAGE = (
    "Usage: streamlimit serve [gunicorn options]   start the service (gunicorn, the project's configuration)\n"
    "       streamlimit COMMAND [options]          a manage.py command, e.g. check, migrate, collectstatic,\n"
    "                                              check_service, issue_token (all of them below)\n"
)


def gunicorn_argv(options: list[str]) -> list[str]:
    """The command line ``serve`` runs: gunicorn with the project's config, ``options`` after it (they win)."""
    return [sys.executable, "-m", "gunicorn", "--config", CONFIG, *options, APPLICATION]


def serve(options: list[str]) -> None:
    """Become gunicorn: its master is this process, so signals from a supervisor reach it directly."""
    argv = gunicorn_argv(options)
    os.execv(argv[0], argv)  # noqa: S606  (our own interpreter, a fixed module and config)


def main(argv: list[str] | None = None) -> None:
    """Run ``streamlimit serve`` or a manage.py command; a bad setting stops either with one line, status 2."""
    args = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    if args[:1] == ["serve"]:
        # gunicorn.conf's own check reports a bad setting (in a child: the
        # master must not import Django before gevent patches the workers).
        serve(args[1:])
        return
    from django.core.management import execute_from_command_line

    from streamlimit.startup import load_settings_or_exit

    load_settings_or_exit("streamlimit")
    if args in ([], ["help"], ["--help"], ["-h"]):
        sys.stdout.write(USAGE + "\n")
    execute_from_command_line(["streamlimit", *args])
