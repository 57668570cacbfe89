"""Issue 20's "Done when" in the demo: four tabs as two phones and two TVs under the family plan, in real Chromium.

The policy is applied (PolicyStore, as ``manage.py policy apply`` does) before
the service starts, so its first heartbeat already decides by it. Each tab is a
device of its own (its device id in the tab's sessionStorage); the tabs come
through a proxy of the test's own that can hold the stop a reloaded page sends,
so that the reload is decided while the old page's session still holds its
slot, as after a crash.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from heartbeat.services import get_live_state, get_policy_store
from tests.conftest import needs_chromium
from tests.policies import DEVICE_LABELS, issue_example
from tests.test_demo_browser import FAST_SERVICE, wait_until

pytestmark = [pytest.mark.browser, needs_chromium]

# The issue's policy, with the names viewers read for the device classes.
FAMILY_POLICY = issue_example(deviceLabels=DEVICE_LABELS)
ACCOUNT = "household-20"

PAGE_ERRORS: list[str] = []


@pytest.fixture(autouse=True)
def no_page_errors() -> Iterator[None]:
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


def open_device(context, base_url: str, device: str, device_class: str):
    """A tab playing the demo as ``device`` (of ``device_class``) of the family account."""
    page = context.new_page()
    page.on("pageerror", lambda error: PAGE_ERRORS.append(f"{device}: {error}"))
    query = {"account": ACCOUNT, "device": device, "deviceClass": device_class, "plan": "family", "autoplay": "1"}
    page.goto(f"{base_url}/demo/?{urlencode(query)}")
    return page


def live_devices() -> list[str | None]:
    return sorted(s.device_name for s in get_live_state().sessions(ACCOUNT))


@pytest.mark.django_db
def test_four_tabs_under_the_family_plan_a_third_phone_a_reload_and_move_here(
    live_browser, live_gunicorn, token_env, holding_proxy, screenshots, staff_client
) -> None:
    get_policy_store().apply(FAMILY_POLICY, applied_by="test", reason="issue 20 walkthrough")
    service = live_gunicorn(workers=2, **FAST_SERVICE, **token_env)
    proxy = holding_proxy(service)
    context = live_browser.new_context(viewport={"width": 1100, "height": 1000})
    phones = [open_device(context, proxy.url, f"Phone {n}", "mobile") for n in (1, 2)]
    tvs = [open_device(context, proxy.url, "TV 1", "tv")]
    for page in phones + tvs:
        page.wait_for_selector("#status[data-state=playing]")

    # A third phone, with a slot still free: refused by the device rule, in its words, with the
    # decision id support asks for.
    third = open_device(context, proxy.url, "Phone 3", "mobile")
    third.wait_for_selector("#status[data-state=refused]")
    assert third.inner_text("#message").startswith("This account is already playing on 2 phones, the most its plan")
    assert third.inner_text("#rule-name") == "devices.mobile" and third.inner_text("#rule-count") == "2 of 2"
    decision_id = third.inner_text("#decision-id")
    assert re.fullmatch(r"[0-9a-f]{16}", decision_id)
    assert third.locator("#screen-list li").count() == 3
    assert third.locator("#screen-list button.move-here").count() == 3
    third.screenshot(path=str(screenshots / "demo-family-third-phone-refused.png"), full_page=True)

    # The second TV takes the account's last slot: two phones and two TVs play.
    tvs.append(open_device(context, proxy.url, "TV 2", "tv"))
    tvs[1].wait_for_selector("#status[data-state=playing]")
    assert "4 of 4 screens" in tvs[1].inner_text("#status")  # the family plan's maxStreams
    assert live_devices() == ["Phone 1", "Phone 2", "TV 1", "TV 2"]
    sessions = {s.device_name: s for s in get_live_state().sessions(ACCOUNT)}
    assert {name: s.device_class for name, s in sessions.items()} == {
        "Phone 1": "mobile", "Phone 2": "mobile", "TV 1": "tv", "TV 2": "tv",
    }  # fmt: skip
    assert len({s.device_id for s in sessions.values()}) == 4  # each tab a device of its own

    # A reload of TV 1 takes its own slot back at once (sameDeviceTakeover by its device id), although
    # the account is full and the old page's stop is held back: the old session is still live.
    old_tv = tvs[0].inner_text("#session-id")
    device_id = tvs[0].inner_text("#device-id")
    proxy.hold("/heartbeat/stop")
    tvs[0].reload()
    tvs[0].wait_for_selector("#status[data-state=playing]")
    wait_until(lambda: len(proxy.arrived) == 1, what="the old page's stop, held")
    assert tvs[0].inner_text("#device-id") == device_id
    new_tv = tvs[0].inner_text("#session-id")
    assert new_tv != old_tv
    assert sorted(s.session_id for s in get_live_state().sessions(ACCOUNT) if s.device_name == "TV 1") == [new_tv]
    proxy.release()
    wait_until(lambda: ("/heartbeat/stop", 204) in proxy.answered, what="the late stop answered")
    assert live_devices() == ["Phone 1", "Phone 2", "TV 1", "TV 2"]

    # Support finds the decision the viewer reads out, with its rule, on the account's page.
    page_url = "/dashboard/user/?" + urlencode({"id": ACCOUNT, "decision": decision_id})
    wait_until(
        lambda: 'class="found"' in staff_client.get(page_url).content.decode(),
        what="the refusal on the user page (written by the service's activity flush, every second)",
    )
    assert "by the rule <code>devices.mobile</code>" in staff_client.get(page_url).content.decode()

    # "Move here" on the refused phone, next to Phone 1: it plays, and Phone 1 is told where playback went.
    phone_1 = phones[0].inner_text("#session-id")
    third.locator(f'#screen-list li[data-session="{phone_1}"] button.move-here').click()
    third.wait_for_selector("#status[data-state=playing]")
    assert third.locator("#rule").is_hidden()
    phones[0].wait_for_selector("#status[data-state=stopped]", timeout=5 * 2 * 1000)
    assert "session_handed_off" in phones[0].inner_text("#status")
    assert phones[0].inner_text("#message") == "Playback moved to Phone 3."
    assert live_devices() == ["Phone 2", "Phone 3", "TV 1", "TV 2"]
    phones[0].screenshot(path=str(screenshots / "demo-family-moved.png"), full_page=True)
    # The other tabs play on.
    for page in (phones[1], *tvs, third):
        assert page.get_attribute("#status", "data-state") == "playing"
    # A playing tab lists the account's other screens on demand; it plays already, so it moves nothing here.
    tvs[1].click("#list-screens")
    tvs[1].wait_for_selector("#screens:not([hidden])")
    listed = tvs[1].locator("#screen-list li .screen-label").all_inner_texts()
    assert sorted(text.split(" — ")[0] for text in listed) == ["Phone 2", "Phone 3", "TV 1"]
    assert all(button.is_disabled() for button in tvs[1].locator("#screen-list button.move-here").all())
    context.close()
