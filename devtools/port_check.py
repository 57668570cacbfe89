"""Stop `make run` with one line when its port is taken, naming a free one to use instead.

Usage: ``python -m devtools.port_check`` (reads HOST and PORT as gunicorn.conf.py does).

Without it a second ``make run`` migrates, collects static files, then has
gunicorn retry the bind for five seconds and print a traceback-like error.
"""

from __future__ import annotations

import errno
import socket
import sys

from django.core.exceptions import ImproperlyConfigured

from streamlimit.gunicorn_settings import read_gunicorn_settings

# How far past the taken port to look for a free one to suggest.
SUGGESTION_RANGE = 100


def port_is_free(host: str, port: int) -> bool:
    """Whether gunicorn could bind ``host:port`` now (it sets SO_REUSEADDR too, so TIME_WAIT does not count)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # an unknown host name is gunicorn's to report
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            # Any other error (a port below 1024 without the right) is gunicorn's to report.
            return exc.errno != errno.EADDRINUSE
    return True


def free_port_after(host: str, port: int) -> int | None:
    """The first free port above ``port`` (within ``SUGGESTION_RANGE``), or None."""
    for candidate in range(port + 1, min(port + SUGGESTION_RANGE, 65535) + 1):
        if port_is_free(host, candidate):
            return candidate
    return None


def main() -> int:
    """Exit 0 when the port is free (or the settings are bad: gunicorn.conf.py says that); else one line, 1."""
    try:
        bind = read_gunicorn_settings().bind
    except ImproperlyConfigured:
        return 0
    host, _, port_text = bind.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    if port_is_free(host, port):
        return 0
    suggestion = free_port_after(host, port)
    if suggestion is None:
        print(f"[make run] port {port} is taken: choose another, e.g. PORT=18080 make run", file=sys.stderr)
    else:
        print(f"[make run] port {port} is taken: PORT={suggestion} make run", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
