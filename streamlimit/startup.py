"""Stop at start-up on a bad setting with one line, not a traceback.

``manage.py`` and gunicorn's configuration (in the master, before any worker
forks) call ``load_settings_or_exit``: a bad environment variable then prints
one line naming it and what it accepts, and the process exits with status 2,
the usual status for a usage error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

EXIT_BAD_SETTING = 2


def load_settings_or_exit(program: str = "streamlimit", *, serving: bool = False) -> None:
    """Import the Django settings now; on a bad value print one line and exit with status 2.

    ``serving``: the process is about to serve players (gunicorn), so it also
    refuses to run without playback tokens unless told (streamlimit/player_auth.py);
    ``manage.py`` commands run either way.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")
    # Imported here, after the settings module is named: callers run before Django is set up.
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018  (reading a setting imports the module)
    except ImproperlyConfigured as exc:
        print(f"{program}: configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_SETTING)
    if serving:
        from streamlimit.player_auth import refusal_to_serve

        if refusal := refusal_to_serve(settings):
            print(f"{program}: configuration error: {refusal}", file=sys.stderr, flush=True)
            sys.exit(EXIT_BAD_SETTING)


def check_settings_in_a_child(program: str) -> None:
    """``load_settings_or_exit`` in a child process: for gunicorn's master, which must not import Django.

    Importing the settings imports ``django.db``, whose per-thread connection
    store would be made before gevent patches each worker, and so be shared
    by every greenlet of a worker ("DatabaseWrapper objects created in a
    thread can only be used in that same thread"). The child prints the same
    one line and this process exits with its status. The child also checks
    that players are not served without tokens unasked (``serving``).
    """
    code = f"from streamlimit.startup import load_settings_or_exit; load_settings_or_exit({program!r}, serving=True)"
    # The folder holding this package goes first on the child's import path, so
    # it checks this copy of the code; the working directory stays this
    # process' own, so relative paths in settings (STREAMLIMIT_VAR_DIR, an
    # installed package's ./var) mean what they will mean to the workers.
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], env=env, check=False)  # noqa: S603
    if result.returncode:
        sys.exit(result.returncode)
