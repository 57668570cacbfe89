"""Policy documents the tests share: issue 20's example, written out once.

``ISSUE_EXAMPLE`` is the document exactly as the issue gives it; tests that
need more (the names viewers read, a plan that flags) build on a copy.
"""

from __future__ import annotations

import copy
from typing import Any

ISSUE_EXAMPLE: dict[str, Any] = {
    "default": {"maxStreams": 3},
    "plans": {
        "basic": {"maxStreams": 1},
        "family": {
            "maxStreams": 4,
            "devices": {"mobile": 2, "tv": 3},
            "pools": {"live": 1},
            "weights": {"uhd": 2},
            "maxNetworks": 2,
            "networkRule": "block",
        },
    },
    "streams": {"live": ["live-*"], "free": ["trailer-*", "preview-*"]},
    "uncountedPools": ["free"],
    "sameDeviceTakeover": True,
}

# The names a viewer reads for the device classes ("already playing on 2 phones").
DEVICE_LABELS = {"mobile": "phones", "tv": "TVs"}


def issue_example(*, plans: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A fresh copy of ``ISSUE_EXAMPLE`` with ``plans`` added to its plans and top-level ``fields`` set."""
    document = copy.deepcopy(ISSUE_EXAMPLE)
    document["plans"].update(copy.deepcopy(plans or {}))
    document.update(copy.deepcopy(fields))
    return document
