"""A support lead changes the policy on the dashboard in a real headless Chromium, under the strict CSP."""

from __future__ import annotations

import json

import pytest

from heartbeat.services import get_policy_store
from tests.conftest import make_staff, needs_chromium
from tests.test_policy import FAMILY
from tests.test_staff_security_browser import WATCH_VIOLATIONS

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.mark.django_db(transaction=True)
def test_a_lead_sees_the_errors_then_applies_a_version_and_reads_its_diff(
    live_server, chromium, django_user_model, screenshots
) -> None:
    make_staff(django_user_model, "lead", "Support lead")
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    context.add_init_script(WATCH_VIOLATIONS)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/dashboard/")
        page.fill("#id_username", "lead")
        page.fill("#id_password", "lead-pass-123")
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/dashboard/")
        page.click(".dashboard-nav >> text=Policy")
        page.wait_for_selector("#policy-form")
        assert "No policy applied" in page.inner_text("#policy-in-force")

        page.fill("#id_document", '{"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 0}}')
        page.click("#apply-policy")
        assert "Expecting ',' delimiter at line 1, column 69" in page.inner_text("#policy-errors")
        page.fill("#id_document", json.dumps({"default": {"maxStreams": 3}, "plans": {"basic": {"screens": 1}}}))
        page.click("#apply-policy")
        assert "$.plans.basic.screens: unknown rule" in page.inner_text("#policy-errors")
        assert get_policy_store().current_version() == 0

        page.fill("#id_document", json.dumps(FAMILY, indent=2))
        page.fill("#id_reason", "family plan launch")
        page.click("#apply-policy")
        page.wait_for_selector("text=Version 1 is in force now")
        assert page.inner_text("#policy-in-force h2") == "Version 1 is in force"
        family = page.locator('#plan-rules tr[data-plan="family"] td').all_inner_texts()
        assert family == ["4", "uhd 2", "mobile 2, tv 3", "live 1", "2 (block)"]
        assert "family plan launch" in page.inner_text('.policy-version[data-version="1"]')
        assert page.locator('.policy-version[data-version="1"] .diff-add').count() > 10
        page.screenshot(path=str(screenshots / "policy.png"), full_page=True)
        assert page.evaluate("window.__violations") == []
    finally:
        context.close()
    assert get_policy_store().current().applied_by == "lead"
