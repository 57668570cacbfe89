"""Every change to webhook endpoints and dead letters, each written to the audit trail.

Shared by the admin, the dashboard and the ``webhooks`` command, so a change is
audited the same way wherever it comes from (as ``dashboard/actions.py`` does
for staff actions). Secrets never reach the trail.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from dashboard.models import AuditRecord
from heartbeat.limiter.events import EventType
from webhooks import streams
from webhooks.models import DeadLetter, Endpoint
from webhooks.signing import check_secret
from webhooks.targets import check_literal_host, parse_url

KNOWN_TYPES = tuple(str(kind) for kind in EventType)


class UnknownEventTypeError(ValueError):
    """An event type that is not one of ``heartbeat.limiter.events.EventType``."""


def check_event_types(types: list[str]) -> list[str]:
    """The types, de-duplicated in order; UnknownEventTypeError naming any unknown one."""
    unknown = [kind for kind in types if kind not in KNOWN_TYPES]
    if unknown:
        raise UnknownEventTypeError(f"unknown event type {', '.join(unknown)} (known: {', '.join(KNOWN_TYPES)})")
    return list(dict.fromkeys(types))


def check_url(url: str) -> str:
    """The URL if webhooks may be sent there (shape, and no private literal address); else ValueError."""
    check_literal_host(parse_url(url), settings.WEBHOOK_ALLOW_PRIVATE_TARGETS)
    return url.strip()


def _audit(actor: AbstractBaseUser | str, action: str, detail: str) -> None:
    who = {"actor_name": actor} if isinstance(actor, str) else {"actor": actor, "actor_name": actor.get_username()}
    AuditRecord.objects.create(**who, action=action, stream_user_id="", detail=detail[:500])


def describe(endpoint: Endpoint) -> str:
    """What the trail says of an endpoint: id, URL, types, on/off, never a secret."""
    types = ",".join(endpoint.event_types) or "all types"
    state = "on" if endpoint.enabled else "off"
    rotating = "; signing with two secrets" if endpoint.previous_secret else ""
    return f"endpoint {endpoint.pk}: {endpoint.url} ({types}; {state}{rotating})"


def add_endpoint(
    actor: AbstractBaseUser | str,
    url: str,
    secret: str,
    event_types: list[str] | None = None,
    *,
    enabled: bool = True,
    description: str = "",
) -> Endpoint:
    """Create an endpoint (checked), its consumer groups, and the audit record."""
    endpoint = Endpoint(
        url=check_url(url),
        secret=check_secret(secret),
        event_types=check_event_types(event_types or []),
        enabled=enabled,
        description=description,
    )
    with transaction.atomic():
        endpoint.save()
        _audit(actor, AuditRecord.Action.WEBHOOK_ADD, describe(endpoint))
    streams.create_groups(endpoint)
    return endpoint


def record_change(actor: AbstractBaseUser | str, endpoint: Endpoint, changed: list[str]) -> None:
    """Audit a change the admin saved (the changed field names; a secret only as "secret")."""
    _audit(actor, AuditRecord.Action.WEBHOOK_CHANGE, f"{describe(endpoint)}; changed {', '.join(changed) or 'nothing'}")


def record_added(actor: AbstractBaseUser | str, endpoint: Endpoint) -> None:
    """Audit an endpoint the admin added, and make its consumer groups."""
    _audit(actor, AuditRecord.Action.WEBHOOK_ADD, describe(endpoint))
    streams.create_groups(endpoint)


def remove_endpoint(actor: AbstractBaseUser | str, endpoint: Endpoint) -> None:
    """Delete an endpoint (its dead letters with it) and its consumer groups. Audited."""
    detail, endpoint_id = describe(endpoint), endpoint.pk
    with transaction.atomic():
        endpoint.delete()
        _audit(actor, AuditRecord.Action.WEBHOOK_REMOVE, detail)
    streams.destroy_groups(endpoint_id)


def record_test_sent(actor: AbstractBaseUser | str, endpoint: Endpoint, outcome: str) -> None:
    """Audit a test event sent from the admin, with what the endpoint answered."""
    _audit(actor, AuditRecord.Action.WEBHOOK_TEST, f"{describe(endpoint)}; {outcome}")


def request_retry(actor: AbstractBaseUser | str, letter: DeadLetter) -> None:
    """Ask the delivery workers to send a dead letter again (one of them takes it). Audited."""
    with transaction.atomic():
        DeadLetter.objects.filter(pk=letter.pk).update(
            retry_requested_at=timezone.now(), retry_claimed_by="", retry_claimed_at=None
        )
        _audit(
            actor,
            AuditRecord.Action.WEBHOOK_RETRY,
            f"endpoint {letter.endpoint_id}: {letter.event_type} {letter.event_id}",
        )
