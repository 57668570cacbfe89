"""The service's version: the one in pyproject.toml, read once at start-up.

pyproject.toml is the only place the version is written; /healthz, the
``streamlimit_build_info`` metric and the OpenAPI description all show it.
An installed package has no pyproject.toml beside it: there the version is
the one its wheel's metadata carries, which was read from the same file.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
DISTRIBUTION = "streamlimit"


def read_version(pyproject: Path = PYPROJECT) -> str:
    """``[project] version`` of ``pyproject``; the installed distribution's version when there is no such file."""
    try:
        with open(pyproject, "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except FileNotFoundError:
        return metadata.version(DISTRIBUTION)


VERSION = read_version()
