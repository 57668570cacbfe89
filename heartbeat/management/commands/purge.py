"""Delete every key under the service's prefix (staging resets)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from heartbeat.services import get_stream_manager
from streamlimit.commands import OperatorCommand, add_json_argument


class Command(OperatorCommand):
    summary = "Delete every Redis key under REDIS_KEY_PREFIX: live sessions, overrides, cool-downs, activity."
    details = "For staging resets; asks for confirmation unless --yes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str | None:
        manager = get_stream_manager()
        prefix = manager.keys.prefix
        if not options["yes"]:
            if not self.stdin_is_interactive():
                raise CommandError("Refusing to purge without confirmation: add --yes.")
            # The question goes to stderr: stdout is the answer alone.
            self.stderr.write(f"Delete every key under '{prefix}:' in Redis? Type the prefix to confirm: ", ending="")
            self.stderr.flush()
            answer = input()
            if answer.strip() != prefix:
                raise CommandError("Not confirmed; nothing was deleted.")
        deleted = manager.purge()
        if options["json"]:
            self.write_json({"deleted": deleted, "keyPrefix": prefix})
            return None
        return f"Deleted {deleted} key(s) under '{prefix}:'."

    @staticmethod
    def stdin_is_interactive() -> bool:
        """Whether someone at a terminal can answer the confirmation."""
        return sys.stdin is not None and sys.stdin.isatty()
