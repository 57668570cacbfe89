"""Replay a window of recorded session events against a proposed policy document."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import pluralize

from heartbeat.limiter.event_reader import parse_window, read_events
from heartbeat.limiter.events import Event, EventType, timestamp_of
from heartbeat.limiter.policy import PolicyInvalidError, parse_policy
from heartbeat.limiter.simulation import SimulationReport, simulate
from heartbeat.services import get_stream_manager
from streamlimit.commands import OperatorCommand, add_json_argument

SESSION_EVENTS = (EventType.SESSION_STARTED, EventType.SESSION_REFUSED, EventType.SESSION_ENDED)


def load_policy_file(path: str) -> Any:
    """The JSON of a policy file ("-": stdin is not offered: the file is what gets reviewed). Raises CommandError."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"{path}: not JSON: {exc}") from None


def report_lines(report: SimulationReport) -> list[str]:
    """The report as people read it."""
    refused = sum(report.newly_refused.values())
    lines = [
        f"replayed {report.events} session events ({report.attempts} sessions started or refused for a limit), "
        f"{report.first_at} to {report.last_at}",
        f"sessions that played and would have been refused: {refused}",
        *(f"  {rule}: {n}" for rule, n in sorted(report.newly_refused.items())),
        f"sessions refused for a limit that would have played: {report.newly_admitted}",
        "refusals under the proposal, by rule: "
        + (", ".join(f"{rule} {n}" for rule, n in sorted(report.refused_by_rule.items())) or "none"),
        f"accounts affected: {len(report.changed_by_account)}",
        *(f"  {user}: {n} decision{pluralize(n)} changed" for user, n in report.top_accounts()),
        "peak concurrent sessions per plan (proposal / recorded): "
        + ", ".join(
            f"{plan} {report.peak_by_plan.get(plan, 0)} / {report.recorded_peak_by_plan.get(plan, 0)}"
            for plan in sorted(set(report.peak_by_plan) | set(report.recorded_peak_by_plan))
        ),
        "assumptions:",
        *(f"  - {assumption}" for assumption in report.as_json()["assumptions"]),
    ]
    return lines


class Command(OperatorCommand):
    summary = "Replay the recorded session events of a window against a proposed policy file, and say what changes."
    details = (
        "Counts the sessions that played but would have been refused (by rule), the refused ones that would have "
        "played, the accounts affected (top 20) and the peak concurrency per plan. The file is checked first: "
        "one that does not validate is refused with every error, before any replay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the proposed policy document (JSON)")
        parser.add_argument("--since", default="24h", help="start of the window: 24h, 7d, or an ISO 8601 time")
        parser.add_argument("--until", default="now", help="end of the window, as --since (default: now)")
        add_json_argument(parser, "one JSON object: the counts, the top accounts, the peaks and the assumptions")

    def handle(self, *args: Any, **options: Any) -> str | None:
        try:
            policy = parse_policy(load_policy_file(options["file"]))
        except PolicyInvalidError as exc:
            raise CommandError(
                f"{options['file']} is not a valid policy:\n" + "\n".join(f"  {e}" for e in exc.errors)
            ) from None
        try:
            since_ms, until_ms = parse_window(options["since"], options["until"], int(time.time() * 1000))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        manager = get_stream_manager()
        entries = read_events(manager.client, manager.keys, since_ms, until_ms, types=SESSION_EVENTS)
        report = simulate((Event.from_json(entry.raw) for entry in entries), policy)
        if report.empty:
            window = f"{timestamp_of(since_ms)} and {timestamp_of(until_ms)}"
            if options["json"]:
                self.write_json({**report.as_json(), "empty": True})
            self.stderr.write(f"no session events between {window}: nothing to replay")
            return None
        if options["json"]:
            self.write_json(report.as_json())
            return None
        return "\n".join(report_lines(report))
