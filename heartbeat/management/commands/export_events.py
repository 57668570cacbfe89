"""Export the recorded events of a time window as NDJSON on stdout, streaming."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import pluralize

from heartbeat.limiter.event_reader import parse_window, read_events
from heartbeat.limiter.events import EventType, timestamp_of
from heartbeat.services import get_stream_manager
from streamlimit.commands import OperatorCommand

# A progress line at most this often (seconds), when stdout is not a terminal.
PROGRESS_EVERY_SECONDS = 1.0


class Command(OperatorCommand):
    summary = "Write the recorded events of a time window to stdout as NDJSON (one event per line), oldest first."
    details = (
        "Streams every activity shard's event stream, merged in time order, in constant memory; "
        "a progress line goes to stderr when stdout is not a terminal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            required=True,
            help="start of the window: a duration back from now (90s, 30m, 24h, 7d, 2w) or an ISO 8601 time (UTC)",
        )
        parser.add_argument("--until", default="now", help="end of the window, as --since (default: now)")
        parser.add_argument(
            "--type",
            dest="types",
            action="extend",
            nargs="+",
            choices=[str(t) for t in EventType],
            metavar="TYPE",
            help="only events of these types (repeatable; default: every type): " + ", ".join(EventType),
        )

    def handle(self, *args: Any, **options: Any) -> str | None:
        try:
            since_ms, until_ms = parse_window(options["since"], options["until"], int(time.time() * 1000))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        manager = get_stream_manager()
        progress = not self.stdout.isatty()
        written, shown_at = 0, time.monotonic()
        for entry in read_events(manager.client, manager.keys, since_ms, until_ms, types=options["types"] or ()):
            self.stdout.write(entry.raw.decode(), ending="\n")
            written += 1
            if progress and time.monotonic() - shown_at >= PROGRESS_EVERY_SECONDS:
                shown_at = time.monotonic()
                self.stderr.write(f"export_events: {written} events, up to {timestamp_of(entry.appended_ms)}")
        window = f"{timestamp_of(since_ms)} and {timestamp_of(until_ms)}"
        if not written:
            self.stderr.write(f"no events between {window}")
        elif progress:
            self.stderr.write(f"export_events: {written} event{pluralize(written)} between {window}")
        return None
