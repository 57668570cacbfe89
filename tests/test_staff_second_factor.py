"""The TOTP second factor's rules, with the test client (the Chromium login is in test_staff_security_browser.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboard.roles import SUPPORT_LEAD, ensure_support_groups
from tests.conftest import make_staff

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/dashboard/"


def login(client: Client, username: str, password: str, code: str = ""):
    return client.post(LOGIN, {"username": username, "password": password, "otp_token": code})


@pytest.fixture
def lead(django_user_model):
    user = make_staff(django_user_model, "lead", SUPPORT_LEAD)
    TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    return user


def code_for(user, steps_ahead: int = 0) -> str:
    return f"{totp(TOTPDevice.objects.get(user=user).bin_key, drift=steps_ahead):06d}"


def test_the_support_lead_role_holds_change_policy() -> None:
    ensure_support_groups()
    codenames = set(Group.objects.get(name=SUPPORT_LEAD).permissions.values_list("codename", flat=True))
    assert codenames == {
        "view_sessions",
        "evict_session",
        "change_limit",
        "change_policy",
        "mark_not_sharing",
        "view_auditrecord",
        # The webhooks page: endpoints' health, and their dead letters with "retry".
        "view_endpoint",
        "view_deadletter",
        "retry_deadletter",
    }


def test_codes_sent_without_the_right_password_never_reach_the_device(lead) -> None:
    # Otherwise a password guesser could use up the device's throttle and lock its owner out that way.
    for n in range(8):
        login(Client(), "lead", "guess", code=f"{n:06d}")
    device = TOTPDevice.objects.get(user=lead)
    assert device.throttling_failure_count == 0
    # Locked meanwhile, for the password alone; the owner's password and code still get in.
    assert login(Client(), "lead", "lead-pass-123").status_code == 429
    assert login(Client(), "lead", "lead-pass-123", code=code_for(lead)).status_code == 302


def test_a_wrong_code_with_the_right_password_is_a_refused_login(lead) -> None:
    client = Client()
    answer = login(client, "lead", "lead-pass-123", code="000000" if code_for(lead) != "000000" else "111111")
    assert answer.status_code == 200 and "not valid" in answer.content.decode()
    assert "_auth_user_id" not in client.session


def test_turning_2fa_on_ends_privileged_sessions_without_it(settings, django_user_model, lead) -> None:
    agent, viewer = Client(), Client()
    agent.force_login(make_staff(django_user_model, "agent", "Support agent"))
    viewer.force_login(make_staff(django_user_model, "viewer", "Support viewer"))
    verified = Client()
    assert login(verified, "lead", "lead-pass-123", code=code_for(lead)).status_code == 302
    settings.STAFF_REQUIRE_2FA = True
    assert agent.get("/dashboard/").status_code == 302  # logged out: to the login form
    assert "_auth_user_id" not in agent.session
    assert viewer.get("/dashboard/").status_code == 200
    assert verified.get("/dashboard/").status_code == 200
