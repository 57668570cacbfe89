"""Which request paths belong to the player API and the probes.

Those answers are JSON whatever happens (404, 405, a bad Host header, a
crash), and go through the lean handler of ``streamlimit/wsgi.py``. A path
belongs to them when its first segment, in any case, is the first segment of
one of ``settings.PLAYER_API_PATHS``: ``/heartbeat//`` and ``/HEARTBEAT`` are
player paths that do not exist, and get a JSON 404, not the staff pages' HTML.
"""

from __future__ import annotations

import functools

from django.conf import settings


@functools.cache
def _player_api_roots(paths: frozenset[str]) -> frozenset[str]:
    return frozenset(path.strip("/").split("/", 1)[0].lower() for path in paths)


def is_player_api_path(path: str) -> bool:
    """Whether ``path`` is on the player API or a probe, existing or not."""
    if path in settings.PLAYER_API_PATHS:
        return True
    return path.lstrip("/").split("/", 1)[0].lower() in _player_api_roots(settings.PLAYER_API_PATHS)
