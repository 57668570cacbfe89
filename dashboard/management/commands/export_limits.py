"""Write every limit override in Redis to a backup file (JSON lines)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from dashboard.limit_backups import LimitOverride, dump_lines
from heartbeat.services import get_live_state
from streamlimit.commands import OperatorCommand


class Command(OperatorCommand):
    summary = "Write every account's limit override to stdout, or to --output FILE, as JSON lines."
    details = (
        'One JSON object a line: {"userId": ..., "limit": ...} (already JSON: no --json flag). '
        "Overrides live only in Redis: back them up, and restore them with import_limits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout (replaced whole)")

    def handle(self, *args: Any, **options: Any) -> str | None:
        overrides = sorted(
            (LimitOverride(user_id, limit) for user_id, limit in get_live_state().limit_overrides()),
            key=lambda override: override.user_id,
        )
        target: Path | None = options["output"]
        if target is None:
            self.stdout.write("".join(dump_lines(overrides)), ending="")
            # stdout is the backup itself; the count goes to stderr.
            sys.stderr.write(f"Exported {len(overrides)} limit override(s).\n")
            return None
        # Written beside the target, then renamed: a failed export never leaves
        # half a backup in place of the previous one.
        partial = target.with_name(target.name + ".partial")
        try:
            with open(partial, "w", encoding="utf-8") as handle:
                handle.writelines(dump_lines(overrides))
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise CommandError(f"Cannot write {target}: {exc.strerror or exc}") from exc
        return f"Exported {len(overrides)} limit override(s) to {target}."
