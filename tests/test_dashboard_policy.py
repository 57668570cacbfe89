"""The dashboard's Policy page: who sees it, who applies, what is refused, and that nothing unsafe is shown."""

from __future__ import annotations

import copy
import json
import re

import pytest
from django.test import Client

from dashboard.models import AuditRecord
from dashboard.roles import SUPPORT_LEAD
from heartbeat.services import get_policy_store
from tests.conftest import make_staff
from tests.test_policy import FAMILY

pytestmark = pytest.mark.django_db

PAGE = "/dashboard/policy/"
APPLY = "/dashboard/policy/apply/"
BASIC_TWO = {"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 2}}}


def post(document: object, expected_version: int = 0, reason: str = "") -> dict:
    text = document if isinstance(document, str) else json.dumps(document)
    return {"document": text, "expected_version": str(expected_version), "reason": reason}


def nothing_applied() -> None:
    assert get_policy_store().current_version() == 0
    assert not AuditRecord.objects.filter(action="apply_policy").exists()


@pytest.fixture
def lead(django_user_model):
    return make_staff(django_user_model, "lead", SUPPORT_LEAD)


@pytest.fixture
def lead_client(client: Client, lead) -> Client:
    client.force_login(lead)
    return client


# --- who may see and apply --------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url"), [("get", PAGE), ("post", APPLY)])
def test_strangers_and_non_staff_are_sent_to_the_login_page(
    client: Client, django_user_model, method: str, url: str
) -> None:
    response = getattr(client, method)(url, post(FAMILY) if method == "post" else None)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(django_user_model.objects.create_user("viewer", password="viewer-pass-123"))
    response = getattr(client, method)(url, post(FAMILY) if method == "post" else None)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    nothing_applied()


def test_staff_without_a_support_role_get_403(roleless_staff_client: Client) -> None:
    assert roleless_staff_client.get(PAGE).status_code == 403
    assert roleless_staff_client.post(APPLY, post(FAMILY)).status_code == 403
    nothing_applied()


@pytest.mark.parametrize("who", ["viewer_client", "staff_client"])
def test_viewers_and_agents_see_the_policy_but_may_not_apply_one(request, who: str) -> None:
    client: Client = request.getfixturevalue(who)
    get_policy_store().apply(FAMILY, applied_by="cli:ops", reason="launch")
    page = client.get(PAGE)
    content = page.content.decode()
    assert page.status_code == 200 and "Version 1 is in force" in content
    assert 'name="document"' not in content and "Apply a new version" not in content
    assert client.post(APPLY, post(BASIC_TWO, expected_version=1)).status_code == 403
    assert get_policy_store().current_version() == 1 and not AuditRecord.objects.exists()


def test_a_lead_applies_a_new_version_audited_with_who_and_why(lead_client: Client, lead, json_log_lines) -> None:
    form_page = lead_client.get(PAGE).content.decode()
    # The form starts from the policy in force (here the settings'), editing version 0.
    assert 'name="expected_version" value="0"' in form_page and "&quot;maxStreams&quot;: 3" in form_page
    response = lead_client.post(APPLY, post(FAMILY, 0, "family plan launch"))
    assert response.status_code == 302 and response["Location"] == PAGE
    record = get_policy_store().current()
    assert (record.version, record.applied_by, record.reason, record.document) == (
        1,
        "lead",
        "family plan launch",
        FAMILY,
    )
    audit = AuditRecord.objects.get()
    assert (audit.action, audit.actor, audit.reason) == ("apply_policy", lead, "family plan launch")
    assert audit.detail == "policy version 1 (was none: the settings decided)"
    assert [line["message"] for line in json_log_lines()].count("policy applied") == 1
    after = lead_client.get(PAGE).content.decode()
    assert "Version 1 is in force now; every server decides with it within a few seconds." in after
    assert 'name="expected_version" value="1"' in after


def test_superusers_may_apply(client: Client, django_user_model) -> None:
    client.force_login(django_user_model.objects.create_superuser("root", password="root-pass-123"))
    assert client.post(APPLY, post(FAMILY)).status_code == 302
    assert get_policy_store().current_version() == 1


# --- what is refused --------------------------------------------------------------------------------


def test_an_invalid_document_lists_every_error_with_its_path_and_applies_nothing(lead_client: Client) -> None:
    bad = {"default": {"maxStreams": 0}, "plans": {"basic": {"maxStreams": 1, "screens": 2}}}
    response = lead_client.post(APPLY, post(bad))
    content = response.content.decode()
    assert response.status_code == 400
    errors = re.search(r'<ul class="errorlist policy-errors" id="policy-errors">(.*?)</ul>', content).group(1)
    assert re.findall(r"<li>(.*?)</li>", errors) == [
        "$.default.maxStreams: must be a whole number from 1 to 50",
        "$.plans.basic.screens: unknown rule (expected one of maxStreams, devices, pools, weights, maxNetworks, "
        "networkRule)",
    ]
    assert "Nothing was applied: the new version is not valid" in content
    # The pasted text is kept, to be fixed.
    assert "&quot;screens&quot;: 2" in content
    nothing_applied()


def test_invalid_json_says_where(lead_client: Client) -> None:
    response = lead_client.post(APPLY, post('{"default": {"maxStreams": 3},\n "plans": {]}'))
    assert response.status_code == 400
    assert "$: not valid JSON: Expecting property name enclosed in double quotes at line 2, column 12" in (
        response.content.decode()
    )
    nothing_applied()


def test_a_huge_paste_is_refused(lead_client: Client) -> None:
    over_the_cap = json.dumps({**FAMILY, "description": "x" * 70_000})
    response = lead_client.post(APPLY, post(over_the_cap))
    assert response.status_code == 400 and "at most 65536 characters" in response.content.decode()
    # Under the character cap but over the byte cap (4 bytes a character).
    wide = json.dumps({**FAMILY, "description": "\U0001f600" * 20_000}, ensure_ascii=False)
    assert len(wide) < 65_536 < len(wide.encode())
    response = lead_client.post(APPLY, post(wide))
    assert response.status_code == 400 and "more than the 65,536 allowed" in response.content.decode()
    # Bigger than Django reads at all (DATA_UPLOAD_MAX_MEMORY_SIZE): refused before the view.
    assert lead_client.post(APPLY, post("x" * 3_000_000)).status_code == 400
    nothing_applied()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"document": json.dumps(FAMILY), "reason": "", "expected_version": "-1"}, "expected_version"),
        ({"document": json.dumps(FAMILY), "reason": ""}, "expected_version"),
        ({"document": json.dumps(FAMILY), "reason": "a\u202eb", "expected_version": "0"}, "reason"),
        ({"reason": "", "expected_version": "0"}, "document"),
    ],
)
def test_bad_fields_apply_nothing(lead_client: Client, data: dict, field: str) -> None:
    response = lead_client.post(APPLY, data)
    assert response.status_code == 400
    explained = {
        "expected_version": "This page is out of date or was changed: reload it",
        "reason": "Must not contain U+202E",
        "document": "This field is required.",
    }[field]
    assert explained in response.content.decode()
    nothing_applied()


def test_a_stale_page_cannot_undo_a_newer_version(lead_client: Client) -> None:
    page = lead_client.get(PAGE).content.decode()
    assert 'name="expected_version" value="0"' in page
    # Meanwhile someone else applies version 1.
    get_policy_store().apply(FAMILY, applied_by="cli:ops", reason="launch")
    response = lead_client.post(APPLY, post(BASIC_TWO, expected_version=0, reason="mine"))
    content = response.content.decode()
    assert response.status_code == 409
    assert "Nothing was applied: version 1 was applied after this page showed no version" in content
    assert get_policy_store().current_version() == 1 and get_policy_store().current().document == FAMILY
    assert not AuditRecord.objects.exists()
    # The text is kept; applying it again now knowingly replaces version 1.
    assert 'name="expected_version" value="1"' in content and "&quot;maxStreams&quot;: 2" in content
    assert lead_client.post(APPLY, post(BASIC_TWO, expected_version=1)).status_code == 302
    assert get_policy_store().current_version() == 2


def test_posts_without_a_csrf_token_are_refused(lead) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(lead)
    assert client.post(APPLY, post(FAMILY)).status_code == 403
    nothing_applied()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(PAGE).content.decode()).group(1)
    assert client.post(APPLY, {**post(FAMILY), "csrfmiddlewaretoken": token}).status_code == 302
    assert get_policy_store().current_version() == 1


def test_apply_takes_posts_only(lead_client: Client) -> None:
    assert lead_client.get(APPLY).status_code == 405
    assert lead_client.post(PAGE, post(FAMILY)).status_code == 405
    nothing_applied()


# --- what the page shows ----------------------------------------------------------------------------


def test_without_a_policy_the_page_shows_what_the_settings_decide(viewer_client: Client, settings) -> None:
    settings.MAX_CONCURRENT_STREAMS = 2
    settings.PLAN_LIMITS = {"premium": 5}
    content = viewer_client.get(PAGE).content.decode()
    assert "No policy applied" in content and "MAX_CONCURRENT_STREAMS and PLAN_LIMITS decide" in content
    assert re.search(r'<tr data-plan="premium"><th scope="row">premium</th><td>5</td>', content)
    assert "No version was ever applied." in content


def test_each_plan_shows_its_rules_after_inheritance(viewer_client: Client) -> None:
    document = copy.deepcopy(FAMILY)
    document["default"] = {"maxStreams": 3, "devices": {"tv": 1}}
    get_policy_store().apply(document, applied_by="cli:ops")
    content = viewer_client.get(PAGE).content.decode()
    basic = re.search(r'<tr data-plan="basic">(.*?)</tr>', content).group(1)
    # basic sets maxStreams only: the rest is default's, greyed as inherited.
    assert re.findall(r"<td( class=\"inherited\")?>(.*?)</td>", basic) == [
        ("", "1"),
        (' class="inherited"', "none"),
        (' class="inherited"', "tv 1"),
        (' class="inherited"', "none"),
        (' class="inherited"', "no cap"),
    ]
    family = re.search(r'<tr data-plan="family">(.*?)</tr>', content).group(1)
    assert re.findall(r"<td>(.*?)</td>", family) == ["4", "uhd 2", "mobile 2, tv 3", "live 1", "2 (block)"]
    assert "<td>free</td><td><code>trailer-*, preview-*</code></td><td>no (uncounted)</td>" in content
    assert "takes its old session's place (sameDeviceTakeover)" in content


def test_the_history_shows_who_when_why_and_a_diff_per_version(viewer_client: Client) -> None:
    store = get_policy_store()
    store.apply(FAMILY, applied_by="cli:alice", reason="launch")
    store.apply({**FAMILY, "plans": {**FAMILY["plans"], "basic": {"maxStreams": 2}}}, applied_by="bob")
    content = viewer_client.get(PAGE).content.decode()
    versions = re.findall(r'<div class="policy-version" data-version="(\d+)">', content)
    assert versions == ["2", "1"]
    second = content.split('data-version="2">')[1].split('data-version="1">')[0]
    assert "(in force)" in second and 'by <span class="sl-text">bob</span> (no reason given)' in second
    assert '<span class="diff-file">--- version 1</span>' in second
    assert '<span class="diff-del">-      &quot;maxStreams&quot;: 1</span>' in second
    assert '<span class="diff-add">+      &quot;maxStreams&quot;: 2</span>' in second
    first = content.split('data-version="1">')[1]
    assert 'by <span class="sl-text">cli:alice</span>: <span class="sl-text">launch</span>' in first
    assert '<span class="diff-file">--- (nothing applied)</span>' in first


def test_the_diff_of_the_oldest_version_shown_is_against_the_one_before_it(viewer_client: Client, monkeypatch) -> None:
    from heartbeat.limiter import policy_store

    store = get_policy_store()
    for limit in (1, 2, 3):
        store.apply({"default": {"maxStreams": limit}}, applied_by="ops")
    monkeypatch.setattr(policy_store, "HISTORY_SHOWN", 2)
    content = viewer_client.get(PAGE).content.decode()
    assert re.findall(r'data-version="(\d+)"', content) == ["3", "2"]
    oldest = content.split('data-version="2">')[1]
    assert '<span class="diff-file">--- version 1</span>' in oldest and "+  &quot;default&quot;" not in oldest


def test_what_staff_wrote_is_shown_escaped_and_the_page_has_no_inline_script(lead_client: Client) -> None:
    hostile = {**FAMILY, "description": "<script>alert(1)</script><img src=x onerror=alert(2)>"}
    get_policy_store().apply(hostile, applied_by="cli:<b>ops</b>", reason="<i>why</i>")
    response = lead_client.get(PAGE)
    content = response.content.decode()
    assert "<script>alert" not in content and "<img src=x" not in content and "<b>ops" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content and "&lt;i&gt;why&lt;/i&gt;" in content
    assert re.findall(r"<script(?![^>]*\bsrc=)", content) == []
    # No event handler or style attribute in any tag (the escaped text above has no tags).
    assert not re.search(r"<[^>]*\s(on[a-z]+|style)=", content)
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_the_navigation_links_to_the_policy_page(viewer_client: Client) -> None:
    assert f'<a href="{PAGE}">Policy</a>' in viewer_client.get("/dashboard/").content.decode()


def test_redis_down_shows_a_page_and_applies_nothing(lead_client: Client, settings) -> None:
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    for response in (lead_client.get(PAGE), lead_client.post(APPLY, post(FAMILY))):
        assert response.status_code == 503 and b"Redis cannot be reached" in response.content
    assert not AuditRecord.objects.exists()
