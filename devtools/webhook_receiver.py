"""A local webhook receiver that verifies each request's signature and prints the event.

Usage: ``python -m devtools.webhook_receiver --secret whsec_... [--secret OLD] [--port 9000] [--quiet]``

Every request is checked with the ``standardwebhooks`` package (the headers
``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; any of the given
secrets may match): a verified event is printed as one JSON line on stdout and
answered 204; anything else is answered 401 with a line on stderr. With
``--quiet`` nothing is printed per event: a count every second on stderr
(the benchmark uses it). Listens on 127.0.0.1 only; for development, the
manual's walkthrough and the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY = 1024 * 1024


class Receiver(ThreadingHTTPServer):
    """The server: its secrets, what it counted, where it prints."""

    daemon_threads = True

    def __init__(self, port: int, secrets: list[str], quiet: bool) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.hooks = [Webhook(secret) for secret in secrets]
        self.quiet = quiet
        self.verified = 0
        self.refused = 0
        self.lock = threading.Lock()

    def verify(self, body: bytes, headers: dict[str, str]) -> dict | None:
        """The event if any secret verifies it, else None."""
        for hook in self.hooks:
            try:
                return hook.verify(body, headers)
            except WebhookVerificationError:
                continue
        return None


class Handler(BaseHTTPRequestHandler):
    """POST: verify and print; anything else: 405."""

    protocol_version = "HTTP/1.1"  # keep-alive: the delivery worker reuses its connections
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413)
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        event = self.server.verify(body, headers)
        with self.server.lock:
            if event is None:
                self.server.refused += 1
            else:
                self.server.verified += 1
        if event is None:
            print(f"[webhook_receiver] refused {headers.get('webhook-id', '?')}: bad signature", file=sys.stderr)
            self._answer(401)
            return
        if not self.server.quiet:
            line = json.dumps({"webhook-id": headers["webhook-id"], "verified": True, "event": event})
            with self.server.lock:  # one whole line at a time, whichever thread
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        self._answer(204)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per verified event is the output; no access log


def report(server: Receiver) -> None:
    """With --quiet: the running totals once a second on stderr."""
    while True:
        time.sleep(1)
        print(f"[webhook_receiver] verified {server.verified} refused {server.refused}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """Parse the flags and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devtools.webhook_receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--secret", action="append", required=True, help="a whsec_ secret (repeat for two)")
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (default 9000)")
    parser.add_argument("--quiet", action="store_true", help="count instead of printing each event")
    options = parser.parse_args(argv)
    try:
        server = Receiver(options.port, options.secret, options.quiet)
    except OSError as exc:
        parser.exit(2, f"[webhook_receiver] cannot listen on 127.0.0.1:{options.port}: {exc}\n")
    print(f"[webhook_receiver] listening on http://127.0.0.1:{server.server_port}/", file=sys.stderr, flush=True)
    if options.quiet:
        threading.Thread(target=report, args=(server,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
