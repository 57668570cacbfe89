"""The risk view and the policy simulator in headless Chromium: a lead marks an account, simulates a policy."""

from __future__ import annotations

import json
import time

import pytest

from dashboard.models import AuditRecord
from heartbeat.limiter.risk import RiskReport
from heartbeat.services import get_risk_store, get_stream_manager
from tests.conftest import CHROMIUM, make_staff
from tests.test_dashboard_browser import log_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package: apt-get install chromium"),
]


@pytest.mark.django_db(transaction=True)
def test_a_lead_reads_the_evidence_marks_an_account_and_simulates_a_policy(
    live_server, chromium, django_user_model, screenshots
) -> None:
    make_staff(django_user_model, "lead", "Support lead")
    reports = [
        RiskReport("shared-account", 110, ["5 networks in 3 days", "5 networks at once on Monday 20:14 UTC"]),
        RiskReport("big-family", 64, ["4 networks in 3 days", "2 networks at once on Sunday 19:02 UTC"]),
        RiskReport("traveller", 30, ["5 networks in 3 days"]),
    ]
    get_risk_store().save(reports, flag_score=60, scored_at_ms=int(time.time() * 1000) - 600_000)

    page = log_in(chromium, live_server.url, "lead")
    page.click("text=Sharing signals")
    page.click("#sharing-views >> text=Risk scores")
    assert "A score is a signal, not proof." in page.inner_text("#not-proof")
    assert page.locator("#risk tbody tr").nth(0).get_attribute("data-user") == "shared-account"
    row = page.locator('#risk tr[data-user="big-family"]')
    row.locator('input[name="reason"]').fill("Family of five, checked on the phone")
    row.locator('input[value="Mark not sharing"]').click()
    page.wait_for_selector("text=Marked big-family not sharing")
    # 64 x 25% = 16 at once: the account drops below the traveller's 30.
    order = [page.locator("#risk tbody tr").nth(n).get_attribute("data-user") for n in range(3)]
    assert order == ["shared-account", "traveller", "big-family"]
    assert page.inner_text('#risk tr[data-user="big-family"] .risk-score').startswith("16")
    page.screenshot(path=str(screenshots / "sharing-risk.png"), full_page=True)
    assert AuditRecord.objects.get().action == "mark_not_sharing"

    manager = get_stream_manager()
    for n in range(3):
        manager.admit("fam", "m", f"f{n}", plan="basic", network="10.0.0.0/24")
    manager.flush_activity()
    page.click(".dashboard-nav >> text=Policy simulator")
    page.fill("#id_policy", json.dumps({"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 1}}}))
    page.click("input[value=Simulate]")
    assert page.inner_text("#would-be-refused") == "2"
    page.screenshot(path=str(screenshots / "policy-simulator.png"), full_page=True)
    page.fill("#id_policy", json.dumps({"default": {"maxStreams": 0}}))
    page.click("input[value=Simulate]")
    assert "$.default.maxStreams" in page.inner_text("#policy-errors")
    assert page.locator("#simulation-report").count() == 0
