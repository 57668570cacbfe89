"""The standard library's ``logging``: skip finding the caller's file and line for every record.

No log line of ours shows the caller's file, so the logging HOWTO's
optimisation applies; ``logging._srcfile = None`` is how the HOWTO says to
do it (there is no public switch).
"""

from __future__ import annotations

import logging


def skip_caller_lookup() -> None:
    """Stop ``logging`` from walking the stack for each record's file, line and function."""
    logging._srcfile = None  # type: ignore[attr-defined]
