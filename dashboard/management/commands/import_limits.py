"""Restore limit overrides from a backup written by export_limits (audited, idempotent)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from dashboard import actions
from dashboard.limit_backups import BackupFormatError, LimitOverride, parse_lines
from heartbeat.services import get_live_state
from streamlimit.commands import OperatorCommand, add_json_argument, add_operator_argument, operator_name


class Command(OperatorCommand):
    summary = "Set the limit overrides listed in FILE (written by export_limits; '-' reads stdin)."
    details = (
        "The whole file is checked first: one bad line and nothing is written. Each change is audited like "
        "set_limit; overrides already equal are left alone, so running it twice changes nothing. Overrides not "
        "in the file are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the backup file (JSON lines), or - for stdin")
        parser.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
        add_operator_argument(parser)
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str | None:
        overrides = self._read(options["file"])
        changes = [o for o in overrides if get_live_state().get_limit(o.user_id).override != o.limit]
        unchanged = len(overrides) - len(changes)
        if not options["dry_run"]:
            actor = operator_name(options)
            for override in changes:
                actions.set_limit(actor, override.user_id, override.limit)
        if options["json"]:
            changed = [{"userId": o.user_id, "limit": o.limit} for o in changes]
            self.write_json({"dryRun": options["dry_run"], "set": changed, "unchanged": unchanged})
            return None
        if options["dry_run"]:
            for override in changes:
                self.stdout.write(f"would set {override.user_id} to {override.limit}")
            return f"Dry run: {len(changes)} override(s) would be set, {unchanged} already as in the file."
        return f"Imported: {len(changes)} override(s) set, {unchanged} already as in the file."

    @staticmethod
    def _read(name: str) -> list[LimitOverride]:
        try:
            if name == "-":
                return parse_lines(sys.stdin)
            with open(name, encoding="utf-8") as handle:
                return parse_lines(handle)
        except BackupFormatError as exc:
            raise CommandError(f"{name} is not a valid limits backup; nothing was imported:\n{exc}") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(f"{name} is not UTF-8 text; nothing was imported: {exc}") from exc
        except OSError as exc:
            raise CommandError(f"Cannot read {name}: {exc.strerror or exc}") from exc
