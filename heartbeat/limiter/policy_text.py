"""A policy document as operators write it: JSON text, checked whole, and shown back pretty and as diffs.

The ``policy`` command and the dashboard's Policy page read the text the same
way: at most ``MAX_POLICY_BYTES``, UTF-8, one JSON object with no repeated
key, then ``parse_policy``. Every problem becomes a line of
``PolicyInvalidError.errors`` (a JSON syntax error with its line and column),
so both show the same words for the same mistake.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from typing import Any

from heartbeat.limiter.policy import Policy, PolicyInvalidError, parse_policy

# A real policy is a few kilobytes (200 plans of a few rules); the cap keeps a paste or a
# wrong file from filling Redis' history, the page or the process.
MAX_POLICY_BYTES = 64 * 1024


def load_policy_json(text: str | bytes) -> Any:
    """The JSON value of ``text``; raises ``PolicyInvalidError`` for an oversized, non-UTF-8 or non-JSON text."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyInvalidError([f"$: the document is {len(raw):,} bytes, more than the {MAX_POLICY_BYTES:,} allowed"])
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyInvalidError([f"$: not UTF-8 text (byte {exc.start + 1})"]) from exc
    if not decoded.strip():
        raise PolicyInvalidError(["$: empty: a policy is one JSON object"])
    try:
        return json.loads(decoded, object_pairs_hook=_no_repeated_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise PolicyInvalidError([f"$: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]) from exc
    except _RepeatedKeyError as exc:
        raise PolicyInvalidError([f"$: the key {exc.key!r} appears twice in one object (JSON keeps only one)"]) from exc
    except RecursionError as exc:
        raise PolicyInvalidError(["$: nested too deeply to be a policy"]) from exc
    except ValueError as exc:  # NaN/Infinity, an integer of thousands of digits
        raise PolicyInvalidError([f"$: not valid JSON: {exc}"]) from exc


def check_policy_text(text: str | bytes) -> tuple[Any, Policy]:
    """The document in ``text`` and its parsed Policy; raises ``PolicyInvalidError`` listing every problem."""
    document = load_policy_json(text)
    return document, parse_policy(document)


def pretty(document: Any) -> str:
    """The document as the dashboard and ``policy show`` print it (keys in the author's order, 2-space indent)."""
    return json.dumps(document, indent=2, ensure_ascii=False)


def unified_diff(before: Any | None, after: Any, before_name: str, after_name: str) -> list[str]:
    """The lines of a unified diff between two documents' pretty forms (``before`` None: all added)."""
    old = pretty(before).splitlines() if before is not None else []
    return list(difflib.unified_diff(old, pretty(after).splitlines(), before_name, after_name, lineterm=""))


class _RepeatedKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys silently: an operator's typo would vanish.
    counts = Counter(key for key, _ in pairs)
    for key, count in counts.items():
        if count > 1:
            raise _RepeatedKeyError(key)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
