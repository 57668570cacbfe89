"""The dashboard's policy simulator: who may use it, the proposal's validation, and the report over recorded traffic."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from heartbeat.services import get_stream_manager
from tests.conftest import make_staff
from tests.test_simulation import RECORDED_POLICY

pytestmark = pytest.mark.django_db

SIMULATE = "/dashboard/policy/simulate/"
PROPOSAL = {"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 1}, "family": {"maxStreams": 3}}}


@pytest.fixture
def lead_client(client: Client, django_user_model) -> Client:
    """A support lead: holds change_policy."""
    client.force_login(make_staff(django_user_model, "lead-ana", "Support lead"))
    return client


def record_traffic() -> None:
    """Under RECORDED_POLICY: 'fam' plays 4 on family (a fifth refused), 'bas' plays 2 on basic."""
    manager = get_stream_manager()
    manager.policy_store.apply(RECORDED_POLICY, applied_by="test")
    for n in range(4):
        assert manager.admit("fam", "m", f"f{n}", plan="family", network="10.0.0.0/24").allowed
    assert not manager.admit("fam", "m", "f4", plan="family", network="10.0.0.0/24").allowed
    for n in range(2):
        assert manager.admit("bas", "m", f"b{n}", plan="basic", network="10.0.0.0/24").allowed
    manager.flush_activity()


def cell(content: str, cell_id: str) -> str:
    return re.search(rf'id="{cell_id}">(.*?)</td>', content, re.DOTALL).group(1)


def test_strangers_are_sent_to_the_login_page(outsider_client: Client) -> None:
    for client in (Client(), outsider_client):
        assert client.get(SIMULATE)["Location"].startswith("/admin/login/")
        assert client.post(SIMULATE, {"policy": json.dumps(PROPOSAL)})["Location"].startswith("/admin/login/")


def test_agents_and_viewers_without_change_policy_get_403(staff_client: Client, django_user_model) -> None:
    record_traffic()
    viewer = Client()
    viewer.force_login(make_staff(django_user_model, "viewer-cy", "Support viewer"))
    for client in (staff_client, viewer):
        assert client.get(SIMULATE).status_code == 403
        response = client.post(SIMULATE, {"policy": json.dumps(PROPOSAL), "window": "24h"})
        assert response.status_code == 403 and b"would-be-refused" not in response.content
        assert b"Policy simulator" not in client.get("/dashboard/").content  # no link in the nav either


def test_leads_get_the_form_with_the_policy_in_force_and_a_24h_window(lead_client: Client) -> None:
    content = lead_client.get(SIMULATE).content.decode()
    assert 'href="/dashboard/policy/simulate/"' in lead_client.get("/dashboard/").content.decode()
    assert "&quot;family&quot;" in content  # the example, none being in force
    assert re.search(r'<option value="24h" selected>', content)
    get_stream_manager().policy_store.apply({"default": {"maxStreams": 7}}, applied_by="test")
    assert "&quot;maxStreams&quot;: 7" in lead_client.get(SIMULATE).content.decode()
    assert "A viewer refused under the proposed policy does not retry." in content


def test_the_form_needs_the_csrf_token(django_user_model) -> None:
    record_traffic()
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_staff(django_user_model, "lead-ana", "Support lead"))
    assert client.post(SIMULATE, {"policy": json.dumps(PROPOSAL), "window": "24h"}).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(SIMULATE).content.decode()).group(1)
    response = client.post(SIMULATE, {"policy": json.dumps(PROPOSAL), "window": "24h", "csrfmiddlewaretoken": token})
    assert response.status_code == 200 and 'id="would-be-refused"' in response.content.decode()


def test_the_report_has_the_simulators_exact_counts(lead_client: Client) -> None:
    record_traffic()
    response = lead_client.post(SIMULATE, {"policy": json.dumps(PROPOSAL), "window": "1h"})
    content = response.content.decode()
    assert response.status_code == 200
    # basic = 1 refuses bas's second session, family = 3 fam's fourth; the refused fifth stays refused.
    assert cell(content, "would-be-refused") == "2"
    assert cell(content, "would-have-played") == "0"
    assert cell(content, "accounts-affected") == "2"
    assert "<code>maxStreams</code> 3" in cell(content, "refused-by-rule")
    top = content.split('id="top-accounts"')[1].split("</table>")[0]
    assert re.findall(r'<bdi class="sl-id">(\w+)</bdi></a></td><td>(\d+)</td>', top) == [("bas", "1"), ("fam", "1")]
    peaks = content.split('id="peaks"')[1].split("</table>")[0]
    assert re.findall(r'<bdi class="sl-id">(\w+)</bdi></td><td>(\d+)</td><td>(\d+)</td>', peaks) == [
        ("basic", "1", "2"),
        ("family", "3", "4"),
    ]
    assert "A viewer refused under the proposed policy does not retry." in content


def test_a_policy_that_does_not_validate_is_refused_with_its_paths_and_nothing_is_replayed(
    lead_client: Client,
) -> None:
    record_traffic()
    bad = {"default": {"maxStreams": 0}, "plans": {"x": {"devices": {"TV": 1}}}}
    response = lead_client.post(SIMULATE, {"policy": json.dumps(bad), "window": "24h"})
    content = response.content.decode()
    assert response.status_code == 400
    assert "Not a valid policy: nothing was replayed" in content
    assert "$.default.maxStreams" in content and "$.plans.x.devices" in content
    assert 'id="simulation-report"' not in content and "Replayed" not in content
    # What was pasted stays in the form, to be corrected.
    assert "&quot;TV&quot;" in content


def test_a_paste_that_is_not_json_is_refused(lead_client: Client) -> None:
    response = lead_client.post(SIMULATE, {"policy": '{"default": {"maxStreams": 2}', "window": "24h"})
    assert response.status_code == 400
    assert (
        "$: not JSON: Expecting" in response.content.decode()
        and 'id="simulation-report"' not in response.content.decode()
    )


def test_an_empty_policy_or_an_unknown_window_is_a_form_error(lead_client: Client) -> None:
    response = lead_client.post(SIMULATE, {"policy": "", "window": "24h"})
    assert response.status_code == 400 and "This field is required." in response.content.decode()
    response = lead_client.post(SIMULATE, {"policy": json.dumps(PROPOSAL), "window": "forever"})
    assert response.status_code == 400 and "Select a valid choice." in response.content.decode()


def test_an_empty_window_says_so(lead_client: Client) -> None:
    response = lead_client.post(SIMULATE, {"policy": json.dumps(PROPOSAL), "window": "24h"})
    content = response.content.decode()
    assert response.status_code == 200
    assert "No session events in this window: nothing to replay." in content
    assert 'id="would-be-refused"' not in content
