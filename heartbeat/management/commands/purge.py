"""Delete every key under the service's prefix (staging resets)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from dashboard.management.base import OperatorCommand
from heartbeat.services import get_stream_manager


class Command(OperatorCommand):
    help = (
        "Delete every Redis key under REDIS_KEY_PREFIX: live sessions, overrides, cool-downs, activity. "
        "For staging resets; asks for confirmation unless --yes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args: Any, **options: Any) -> str:
        manager = get_stream_manager()
        prefix = manager.keys.prefix
        if not options["yes"]:
            if not self.stdin_is_interactive():
                raise CommandError("Refusing to purge without confirmation: add --yes.")
            answer = input(f"Delete every key under '{prefix}:' in Redis? Type the prefix to confirm: ")
            if answer.strip() != prefix:
                raise CommandError("Not confirmed; nothing was deleted.")
        deleted = manager.purge()
        return f"Deleted {deleted} key(s) under '{prefix}:'."

    @staticmethod
    def stdin_is_interactive() -> bool:
        return sys.stdin is not None and sys.stdin.isatty()
