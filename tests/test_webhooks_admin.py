"""Webhook endpoints in the admin and the dashboard, the audit trail, signing and the SSRF rule (in-process).

tests/test_webhooks_postgres.py runs this whole module again on PostgreSQL.
"""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dashboard.models import AuditRecord
from heartbeat.limiter.events import STREAM_FIELD, Event, EventType
from heartbeat.limiter.keys import KeyLayout
from webhooks import endpoints
from webhooks.models import DeadLetter, Endpoint
from webhooks.signing import BadSecretError, Signer, check_secret, new_secret
from webhooks.targets import RefusedTargetError, Target, parse_url, refused_reason, resolve

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def on_the_expected_database() -> None:
    """tests/test_webhooks_postgres.py runs this module on PostgreSQL: guard that it really is."""
    from django.db import connection

    expected = os.environ.get("STREAMLIMIT_EXPECT_DATABASE_VENDOR")
    if expected:
        assert connection.vendor == expected


ADD_URL = "/admin/webhooks/endpoint/add/"


@pytest.fixture
def superuser_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="root-pass-123"))
    return client


def staff_with(django_user_model, username: str, *codenames: str):
    user = django_user_model.objects.create_user(username, password="pass-1234567", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def form_errors(response) -> str:
    return " ".join(str(error) for errors in response.context["adminform"].form.errors.values() for error in errors)


def post_add(client, **fields):
    data = {"url": "https://hooks.example.com/in", "new_secret": new_secret(), "enabled": "on", **fields}
    return client.post(ADD_URL, data)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://hooks.example.com/"}, "http:// or https://"),
        ({"url": "not a url"}, "http:// or https://"),
        ({"url": "https://user:pw@hooks.example.com/"}, "user name or password"),
        ({"url": "http://127.0.0.1:9000/"}, "loopback"),
        ({"url": "http://10.0.0.7/"}, "private"),
        ({"url": "http://[::1]/"}, "loopback"),
        ({"url": "http://169.254.169.254/latest"}, "link-local"),
        ({"url": "http://localhost:9000/"}, "loopback"),
        ({"event_types": ["session.started", "session.nonsense"]}, "session.nonsense is not one of"),
        ({"new_secret": "not-a-secret"}, "whsec_"),
        ({"new_secret": ""}, "needs a secret"),
    ],
)
def test_a_bad_url_type_or_secret_is_a_form_error(superuser_client, fields, message) -> None:
    response = post_add(superuser_client, **fields)
    assert response.status_code == 200
    assert message in form_errors(response)
    assert not Endpoint.objects.exists()
    assert not AuditRecord.objects.exists()


def test_private_targets_are_accepted_when_allowed(superuser_client, settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    assert post_add(superuser_client, url="http://127.0.0.1:9000/").status_code == 302
    assert Endpoint.objects.get().url == "http://127.0.0.1:9000/"


def test_every_change_is_audited_and_no_secret_reaches_the_trail(superuser_client) -> None:
    first, second = new_secret(), new_secret()
    response = post_add(superuser_client, new_secret=first, event_types=["session.started", "session.ended"])
    assert response.status_code == 302
    endpoint = Endpoint.objects.get()
    assert endpoint.secret == first and endpoint.event_types == ["session.started", "session.ended"]
    change_url = reverse("admin:webhooks_endpoint_change", args=[endpoint.pk])
    # A new secret rotates: both sign until the previous one is dropped.
    response = superuser_client.post(
        change_url, {"url": endpoint.url, "new_secret": second, "enabled": "on", "event_types": ["session.started"]}
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.secret, endpoint.previous_secret) == (second, first)
    assert endpoint.secrets() == [second, first]
    superuser_client.post(change_url, {"url": endpoint.url, "drop_previous_secret": "on"})
    endpoint.refresh_from_db()
    assert endpoint.previous_secret == "" and not endpoint.enabled
    changelist = reverse("admin:webhooks_endpoint_changelist")
    superuser_client.post(changelist, {"action": "turn_on", "_selected_action": [endpoint.pk]})
    endpoint.refresh_from_db()
    assert endpoint.enabled
    delete_url = reverse("admin:webhooks_endpoint_delete", args=[endpoint.pk])
    assert superuser_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not Endpoint.objects.exists()
    trail = list(AuditRecord.objects.order_by("id"))
    assert [record.action for record in trail] == [
        "webhook_add",
        "webhook_change",
        "webhook_change",
        "webhook_change",
        "webhook_remove",
    ]
    assert all(record.actor_name == "root" for record in trail)
    assert "changed event_types, secret" in trail[1].detail
    assert "previous secret dropped" in trail[2].detail and "enabled" in trail[2].detail
    assert "enabled" in trail[3].detail
    for record in trail:
        assert first not in record.detail and second not in record.detail


def test_the_command_adds_lists_and_removes_with_the_trail(capsys) -> None:
    from django.core.management import call_command

    secret = new_secret()
    call_command("webhooks", "add", "https://hooks.example.com/a", "--secret", secret, "--events", "policy.changed")
    call_command("webhooks", "list", "--json")
    endpoint = Endpoint.objects.get()
    call_command("webhooks", "remove", str(endpoint.pk))
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert f'"id": {endpoint.pk}' in out.out and '"eventTypes": ["policy.changed"]' in out.out
    assert [r.action for r in AuditRecord.objects.order_by("id")] == ["webhook_add", "webhook_remove"]


def test_send_a_test_event_button(superuser_client, settings, receivers) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    secret = new_secret()
    receiver = receivers(secret)
    endpoint = endpoints.add_endpoint("setup", receiver.url, secret)
    url = reverse("admin:webhooks_endpoint_send_test", args=[endpoint.pk])
    change_page = superuser_client.get(reverse("admin:webhooks_endpoint_change", args=[endpoint.pk]))
    assert url in change_page.content.decode()
    assert superuser_client.get(url).status_code == 200  # the confirmation; nothing sent
    assert receiver.ids() == []
    response = superuser_client.post(url, follow=True)
    [arrival] = receiver.arrivals
    assert arrival.verified
    assert receiver.events()[0]["type"] == "webhook.test"
    assert "delivered: HTTP 204" in response.content.decode()
    record = AuditRecord.objects.get(action="webhook_test")
    assert arrival.webhook_id in record.detail and "delivered: HTTP 204" in record.detail
    # An endpoint answering 500: a failure, said and audited.
    receiver.mode = "status:500"
    response = superuser_client.post(url, follow=True)
    assert "failed (5xx): HTTP 500" in response.content.decode()


def test_the_health_page_shows_backlog_lag_and_dead_letters_and_retry_is_audited(
    client, django_user_model, settings, key_prefix, redis_client
) -> None:
    endpoint = endpoints.add_endpoint("setup", "https://hooks.example.com/in", new_secret())
    layout = KeyLayout(key_prefix, settings.ACTIVITY_SHARDS)
    for n in range(3):
        event = Event(EventType.SESSION_STARTED, 0, {"userId": f"acct-{n}"})
        redis_client.xadd(layout.shard_of(f"acct-{n}").events, {STREAM_FIELD: event.to_json()})
    letter = DeadLetter.objects.create(
        endpoint=endpoint,
        event_id="evt_dead",
        event_type="session.ended",
        account="acct-9",
        payload="{}",
        attempts=7,
        last_error="5xx: HTTP 503",
        event_at=timezone.now(),
    )
    viewer = staff_with(django_user_model, "viewer", "view_endpoint")
    client.force_login(viewer)
    page = client.get(reverse("webhooks:health"))
    text = page.content.decode()
    assert page.status_code == 200
    assert re.search(r'class="backlog">3 events', text)
    assert re.search(r'class="last-success">never', text)
    assert "evt_dead" in text and "5xx: HTTP 503" in text
    assert 'value="Retry"' not in text  # no retry permission: no button
    assert not re.search(r"<script(?![^>]*\bsrc=)", text)  # CSP: no inline script
    assert client.post(reverse("webhooks:retry", args=[letter.pk])).status_code == 403
    letter.refresh_from_db()
    assert letter.retry_requested_at is None
    client.force_login(staff_with(django_user_model, "lead", "view_endpoint", "retry_deadletter"))
    assert 'value="Retry"' in client.get(reverse("webhooks:health")).content.decode()
    assert client.post(reverse("webhooks:retry", args=[letter.pk])).status_code == 302
    letter.refresh_from_db()
    assert letter.retry_requested_at is not None and letter.retry_claimed_by == ""
    record = AuditRecord.objects.get(action="webhook_retry")
    assert record.actor_name == "lead" and "evt_dead" in record.detail
    client.force_login(staff_with(django_user_model, "nobody", "view_sessions"))
    assert client.get(reverse("webhooks:health")).status_code == 403


def test_two_secrets_sign_while_rotating_and_either_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = Event(EventType.SESSION_STARTED, 1_700_000_000_000, {"userId": "a"}).to_json()
    headers = Signer([new, old]).headers("evt_1", body)
    assert headers["webhook-id"] == "evt_1" and headers["webhook-signature"].count("v1,") == 2
    assert Webhook(new).verify(body, headers)["data"] == {"userId": "a"}
    assert Webhook(old).verify(body, headers)["data"] == {"userId": "a"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + b" ", headers)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!", "abc", "whsec_" + "QUJD" * 2])
def test_bad_secrets_are_refused_without_quoting_them(secret) -> None:
    with pytest.raises(BadSecretError) as refused:
        check_secret(secret)
    assert secret.removeprefix("whsec_") not in str(refused.value) or secret == "whsec_"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address refused, not bound
        ("100.64.0.1", "not global"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("224.0.0.1", "multicast"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_the_ssrf_rule_by_address(address, reason) -> None:
    assert refused_reason(address) == reason


def test_names_are_resolved_and_every_address_checked() -> None:
    with pytest.raises(RefusedTargetError, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        resolve(Target("http", "localhost", 80, "/"), allow_private=False)
    assert "127.0.0.1" in resolve(Target("http", "localhost", 80, "/"), allow_private=True)
    assert parse_url("https://h.example/p?q=1") == Target("https", "h.example", 443, "/p?q=1")


def test_the_support_roles_hold_the_webhook_permissions() -> None:
    from django.contrib.auth.models import Group

    def codenames(name: str) -> set[str]:
        permissions = Group.objects.get(name=name).permissions.filter(content_type__app_label="webhooks")
        return set(permissions.values_list("codename", flat=True))

    assert codenames("Support viewer") == {"view_endpoint"}
    assert codenames("Support agent") == {"view_endpoint"}
    assert codenames("Support lead") == {"view_endpoint", "view_deadletter", "retry_deadletter"}
