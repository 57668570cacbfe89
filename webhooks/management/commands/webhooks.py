"""manage.py webhooks: add, list and remove webhook endpoints from the shell (audited, secrets never printed)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from streamlimit.commands import OperatorCommand, add_json_argument
from webhooks import endpoints
from webhooks.models import Endpoint
from webhooks.signing import BadSecretError
from webhooks.targets import BadUrlError, RefusedTargetError


def as_json(endpoint: Endpoint) -> dict[str, Any]:
    """What ``list --json`` says of an endpoint (no secret)."""
    return {
        "id": endpoint.pk,
        "url": endpoint.url,
        "eventTypes": endpoint.event_types,
        "enabled": endpoint.enabled,
        "rotatingSecrets": bool(endpoint.previous_secret),
        "createdAt": endpoint.created_at.isoformat(),
        "changedAt": endpoint.changed_at.isoformat(),
    }


class Command(OperatorCommand):
    summary = "Add, list or remove webhook endpoints."
    details = (
        "webhooks add URL --secret S [--events T,T] (S is whsec_ and base64; --secret - reads it from stdin); "
        "webhooks list [--json]; webhooks remove ID. Every change is audited; secrets are never printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["add", "list", "remove"], help="what to do")
        parser.add_argument("target", nargs="?", default="", help="add: the URL; remove: the endpoint id")
        parser.add_argument("--secret", default="", help="add: the signing secret (whsec_...), or - for stdin")
        parser.add_argument("--events", default="", help="add: event types, comma-separated (default: all)")
        add_json_argument(parser, "list: one JSON array, for scripts")

    def handle(self, *args: Any, **options: Any) -> None:
        action, target = options["action"], options["target"].strip()
        if action == "add":
            self._add(target, options["secret"], options["events"])
        elif action == "list":
            self._list(options["json"])
        else:
            self._remove(target)

    def _add(self, url: str, secret: str, events: str) -> None:
        if not url:
            raise CommandError("webhooks add needs the URL")
        if secret == "-":  # noqa: S105 - "-" means stdin, not a password
            secret = sys.stdin.readline().strip()
        if not secret:
            raise CommandError("webhooks add needs --secret (whsec_ and base64 of 24 to 64 bytes)")
        types = [kind.strip() for kind in events.split(",") if kind.strip()]
        try:
            endpoint = endpoints.add_endpoint("manage.py webhooks", url, secret, types)
        except (BadUrlError, RefusedTargetError) as exc:
            raise CommandError(f"URL: {exc}") from None
        except BadSecretError as exc:
            raise CommandError(f"--secret: {exc}") from None
        except endpoints.UnknownEventTypeError as exc:
            raise CommandError(f"--events: {exc}") from None
        self.stdout.write(f"added {endpoints.describe(endpoint)}")

    def _list(self, json_output: bool) -> None:
        found = list(Endpoint.objects.all())
        if json_output:
            self.write_json([as_json(endpoint) for endpoint in found])
            return
        if not found:
            self.stdout.write("no webhook endpoints")
        for endpoint in found:
            self.stdout.write(endpoints.describe(endpoint))

    def _remove(self, target: str) -> None:
        if not target.isdigit():
            raise CommandError(f"webhooks remove needs an endpoint id (a number), got {target!r}")
        try:
            endpoint = Endpoint.objects.get(pk=int(target))
        except Endpoint.DoesNotExist:
            raise CommandError(f"no webhook endpoint {target}") from None
        detail = endpoints.describe(endpoint)
        endpoints.remove_endpoint("manage.py webhooks", endpoint)
        self.stdout.write(f"removed {detail}")
