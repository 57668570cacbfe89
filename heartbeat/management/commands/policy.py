"""Check, apply and show the limit policy document (validate, apply, show)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from heartbeat.limiter.ids import free_text_error
from heartbeat.limiter.limits import MAX_REASON_LENGTH
from heartbeat.limiter.policy import PolicyInvalidError
from heartbeat.limiter.policy_store import PolicyRecord
from heartbeat.limiter.policy_text import MAX_POLICY_BYTES, check_policy_text, pretty
from heartbeat.services import get_policy_store, get_stream_manager
from streamlimit.commands import OperatorCommand, add_json_argument, operator_name

NO_POLICY = "no policy applied: MAX_CONCURRENT_STREAMS and PLAN_LIMITS decide"
# The audit name given with --by follows the id rule, as a reason does.
MAX_BY_LENGTH = 64


class Command(OperatorCommand):
    summary = "Check a limit policy document, put it in force as a new version, or show a version."
    details = (
        "validate FILE lists every error with its JSON path; apply FILE stores it as the next version "
        "(every server decides with it within seconds), recording who and why; show prints the version in force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{validate,apply,show}")
        validate = actions.add_parser("validate", help="check FILE and list every error with its JSON path")
        validate.add_argument("file", help="the policy document (JSON); - reads stdin")
        apply = actions.add_parser("apply", help="check FILE and put it in force as the next version")
        apply.add_argument("file", help="the policy document (JSON); - reads stdin")
        apply.add_argument("--reason", default="", help=f"why, for the history (up to {MAX_REASON_LENGTH} characters)")
        apply.add_argument(
            "--by",
            "--operator",
            dest="by",
            default=None,
            help="your name, for the history (default: the login name running the command)",
        )
        add_json_argument(apply, "the applied version as one JSON object")
        show = actions.add_parser("show", help="print the version in force, or --version N")
        show.add_argument("--version", type=int, default=None, help="an earlier version (1, 2, ...)")
        add_json_argument(show, "the version, who applied it, when, why and the document, as one JSON object")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """The base's parser; its sub-commands' usage errors are one CommandError line too."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            for sub in action.choices.values():
                sub.called_from_command_line = False
        return parser

    def handle(self, *args: Any, **options: Any) -> str | None:
        handler = {"validate": self.validate, "apply": self.apply, "show": self.show}[options["action"]]
        return handler(options)

    def validate(self, options: dict[str, Any]) -> str:
        """Check the file; the answer names its plans, an invalid one fails with every error."""
        _, policy = self._checked(options["file"], "fix every error listed")
        plans = ", ".join(sorted(policy.plans)) or "none"
        return f"valid: default maxStreams {policy.default.max_streams}; plans: {plans}"

    def apply(self, options: dict[str, Any]) -> str | None:
        """Check the file and store it as the next version (PolicyStore.apply logs the change, once)."""
        if problem := free_text_error(options["reason"]):
            raise CommandError(f"--reason: {problem}")
        by = options["by"]
        if by is not None and (problem := free_text_error(by, MAX_BY_LENGTH) or ("empty" if not by else None)):
            raise CommandError(f"--by: {problem}")
        document, _ = self._checked(options["file"], "nothing was applied (the version in force stays)")
        store = get_policy_store()
        before = store.current_version()
        record = store.apply(document, applied_by=operator_name({"operator": by}), reason=options["reason"])
        if options["json"]:
            self.write_json({**record.as_json(), "previousVersion": before})
            return None
        return (
            f"applied version {record.version} (was {_in_force(before)}) as {record.applied_by}; "
            "every server decides with it within a few seconds"
        )

    def show(self, options: dict[str, Any]) -> str | None:
        """The version asked for (or in force), or what the settings decide when none was applied."""
        store = get_policy_store()
        in_force = store.current_version()
        wanted = options["version"]
        if wanted is not None:
            if wanted < 1:
                raise CommandError("--version: versions start at 1")
            record = store.load(wanted)
            if record is None:
                newest = f"versions 1 to {in_force}" if in_force else "no version was ever applied"
                raise CommandError(f"--version: there is no version {wanted} ({newest})")
        else:
            record = store.load(in_force) if in_force else None
        if record is None:
            document = dict(get_stream_manager().policies.fallback.document)
            if options["json"]:
                self.write_json({"version": 0, "applied": False, "document": document})
                return None
            return f"{NO_POLICY}\n{pretty(document)}"
        if options["json"]:
            self.write_json({**record.as_json(), "applied": True, "inForce": record.version == in_force})
            return None
        return f"{_heading(record, in_force)}\n{pretty(record.document)}"

    def _checked(self, path: str, what_stays: str) -> tuple[Any, Any]:
        try:
            return check_policy_text(_read(path))
        except PolicyInvalidError as exc:
            lines = "\n".join(f"  {error}" for error in exc.errors)
            count = f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}"
            raise CommandError(f"{path} is not a valid policy ({count}); {what_stays}\n{lines}") from exc


def _read(path: str) -> bytes:
    """The file's bytes (stdin for ``-``), read no further than one byte past the size cap."""
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_POLICY_BYTES + 1)
        with Path(path).open("rb") as file:
            return file.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _in_force(version: int) -> str:
    return f"version {version}" if version else "none: the settings decided"


def _heading(record: PolicyRecord, in_force: int) -> str:
    state = "in force" if record.version == in_force else f"not in force (version {in_force} is)"
    applied = record.applied_at.isoformat(timespec="seconds").replace("+00:00", "Z")
    why = f": {record.reason}" if record.reason else ""
    return f"version {record.version}, {state}; applied {applied} by {record.applied_by}{why}"
