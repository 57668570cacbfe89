"""Password guessing on the staff login: django-axes locks a username from an address."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

from tests.conftest import make_staff

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/dashboard/"


@pytest.fixture
def agent(django_user_model):
    return make_staff(django_user_model, "agent", "Support agent")


def login(client: Client, password: str, address: str = "203.0.113.7", **headers: str):
    return client.post(LOGIN, {"username": "agent", "password": password}, REMOTE_ADDR=address, headers=headers or None)


def test_five_wrong_passwords_lock_the_account_from_that_address_right_password_included(agent) -> None:
    client = Client()
    for _ in range(4):
        assert login(client, "wrong").status_code == 200  # the login form again, with its error
    assert login(client, "wrong").status_code == 429  # the fifth locks
    locked = login(client, "agent-pass-123")
    assert locked.status_code == 429
    content = locked.content.decode()
    assert (
        'id="locked-out"' in content
        and "0:15:00" in content
        and 'axes_reset_username <bdi class="sl-text">agent</bdi>' in content
    )
    assert "_auth_user_id" not in client.session


def test_the_same_account_from_another_address_can_still_log_in(agent) -> None:
    for _ in range(5):
        login(Client(), "wrong")
    assert login(Client(), "agent-pass-123", address="198.51.100.20").status_code == 302


def test_four_wrong_passwords_then_the_right_one_logs_in_and_resets_the_count(agent) -> None:
    client = Client()
    for _ in range(4):
        login(client, "wrong")
    assert login(client, "agent-pass-123").status_code == 302
    for _ in range(4):
        login(Client(), "wrong")
    assert login(Client(), "agent-pass-123").status_code == 302


def test_axes_reset_lifts_the_lock(agent) -> None:
    for _ in range(5):
        login(Client(), "wrong")
    assert login(Client(), "agent-pass-123").status_code == 429
    call_command("axes_reset_username", "agent")
    assert login(Client(), "agent-pass-123").status_code == 302


def test_a_direct_client_cannot_dodge_the_lock_with_its_own_x_forwarded_for(agent) -> None:
    for n in range(5):
        login(Client(), "wrong", **{"X-Forwarded-For": f"192.0.2.{n}"})
    assert login(Client(), "agent-pass-123", **{"X-Forwarded-For": "192.0.2.99"}).status_code == 429


def test_behind_our_proxy_the_address_comes_from_the_x_forwarded_for_it_set(agent, settings) -> None:
    settings.BEHIND_PROXY = True
    proxy = "172.18.0.5"
    for _ in range(5):
        login(Client(), "wrong", address=proxy, **{"X-Forwarded-For": "203.0.113.7"})
    assert login(Client(), "agent-pass-123", address=proxy, **{"X-Forwarded-For": "203.0.113.7"}).status_code == 429
    # Another viewer's address through the same proxy is not locked.
    assert login(Client(), "agent-pass-123", address=proxy, **{"X-Forwarded-For": "198.51.100.20"}).status_code == 302
