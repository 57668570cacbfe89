"""manage.py deliver_events: the webhook delivery worker (run several, on several hosts)."""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any

from django.core.management.base import CommandParser
from prometheus_client import start_http_server

from streamlimit.commands import OperatorCommand
from webhooks.delivery import DeliveryWorker
from webhooks.streams import client, layout


class Command(OperatorCommand):
    summary = "Deliver the event streams to the webhook endpoints, signed, until stopped."
    details = (
        "Run as many as you like, on as many hosts: they share the streams through consumer groups and "
        "leases, and a stopped or killed worker's events move to the others. SIGTERM or Ctrl-C stops it "
        "after the requests in flight."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name",
            default="",
            help="this worker's consumer name (default: host name and process id; unique per process)",
        )
        parser.add_argument(
            "--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (default 0: off)"
        )
        parser.add_argument(
            "--metrics-host", default="127.0.0.1", help="address the metrics port binds (default 127.0.0.1)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"] or f"{socket.gethostname()}-{os.getpid()}"
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr=options["metrics_host"])
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stderr.write(f"deliver_events: worker {name} started")
        DeliveryWorker(client(), layout(), name).run(stop)
        self.stderr.write(f"deliver_events: worker {name} stopped")
