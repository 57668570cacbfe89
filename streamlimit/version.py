"""The service's version: the one in pyproject.toml, read once at start-up.

pyproject.toml is the only place the version is written; /healthz, the
``streamlimit_build_info`` metric and the OpenAPI description all show it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def read_version(pyproject: Path = PYPROJECT) -> str:
    """``[project] version`` of ``pyproject``."""
    with open(pyproject, "rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


VERSION = read_version()
