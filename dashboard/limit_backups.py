"""The backup format of limit overrides: one JSON object per line.

``{"userId": "account-42", "limit": 5}``. Overrides are the only state in
Redis that is configuration rather than traffic (sessions expire by
themselves), so they are what a Redis backup must not lose. Written by
``manage.py export_limits``, read back by ``manage.py import_limits``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from heartbeat.limiter.ids import id_error
from heartbeat.limiter.limits import MAX_LIMIT, MIN_LIMIT

# Enough to say what is wrong with a file without flooding the terminal.
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class LimitOverride:
    """One account's limit override."""

    user_id: str
    limit: int


class BackupFormatError(ValueError):
    """The file is not a valid backup; ``errors`` says where and why, line by line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        shown = errors[:MAX_REPORTED_ERRORS]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        super().__init__("\n".join(shown) + more)


def dump_lines(overrides: Iterable[LimitOverride]) -> Iterator[str]:
    """The backup lines of ``overrides``, each ending with a newline."""
    for override in overrides:
        yield json.dumps({"userId": override.user_id, "limit": override.limit}, ensure_ascii=False) + "\n"


def _line_error(row: object) -> str | None:
    if not isinstance(row, dict):
        return 'expected an object like {"userId": "...", "limit": 5}'
    if set(row) != {"userId", "limit"}:
        return f"expected exactly the fields userId and limit, got {', '.join(sorted(map(str, row))) or 'none'}"
    problem = id_error(row["userId"])
    if problem:
        return f"userId: {problem}"
    limit = row["limit"]
    if isinstance(limit, bool) or not isinstance(limit, int):
        return "limit: must be a whole number"
    if not MIN_LIMIT <= limit <= MAX_LIMIT:
        return f"limit: must be between {MIN_LIMIT} and {MAX_LIMIT}, got {limit}"
    return None


def parse_lines(lines: Iterable[str]) -> list[LimitOverride]:
    """Every override of a backup, validated; raises ``BackupFormatError`` naming each bad line.

    Blank lines are skipped. A user listed twice with the same limit counts
    once; with two different limits the file is refused.
    """
    errors: list[str] = []
    found: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            errors.append(f"line {number}: not JSON ({exc})")
            continue
        problem = _line_error(row)
        if problem:
            errors.append(f"line {number}: {problem}")
            continue
        user_id, limit = row["userId"], row["limit"]
        if user_id in found and found[user_id] != limit:
            errors.append(
                f"line {number}: {user_id!r} already has limit {found[user_id]} on line {first_line[user_id]}"
            )
            continue
        found.setdefault(user_id, limit)
        first_line.setdefault(user_id, number)
    if errors:
        raise BackupFormatError(errors)
    return [LimitOverride(user_id, limit) for user_id, limit in found.items()]
