"""Text on staff screens: ids, free text staff write and names players or tokens send follow one rule, shown isolated.

The rule (heartbeat/limiter/ids.py): no control, invisible or direction-changing
characters, and no pile of combining marks (at most 4 in a row, none first).
"""

from __future__ import annotations

import json
import unicodedata

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from dashboard.models import AuditRecord
from heartbeat.limiter.ids import free_text_error, id_error
from heartbeat.services import get_live_state
from tests.conftest import make_token

ZALGO = "a" + "\u0301" * 127  # 128 characters: 127 combining acute accents on one letter
RLO = "\u202e"


def heartbeat(client: Client, token: str | None = None, **fields: str):
    body = {"userId": "alice", "streamId": "movie", "sessionId": "s0", **fields}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/heartbeat", json.dumps(body), content_type="application/json", headers=headers)


@pytest.mark.parametrize(
    "word",
    [
        unicodedata.normalize("NFD", "Tiếng Việt"),  # two marks on one letter
        "\u0915\u094d\u0937\u093f",  # Devanagari "kshi": a virama and a vowel sign
        "e\u0301\u0302\u0303\u0304",  # four marks in a row: the most allowed
        "Living room TV \U0001f4fa",
    ],
)
def test_real_words_with_combining_marks_stay_valid(word: str) -> None:
    assert id_error(word) is None and free_text_error(word) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (ZALGO, "more than 4 combining marks in a row) at character 6"),
        ("e\u0301\u0302\u0303\u0304\u0305", "more than 4 combining marks in a row"),
        ("\u0301abc", "a combining mark with no character before it) at character 1"),
        ("\u20dd", "a combining mark with no character before it"),  # an enclosing mark alone
    ],
)
def test_piles_of_combining_marks_are_refused(value: str, says: str) -> None:
    assert says in id_error(value)


def test_the_api_refuses_ids_and_device_names_made_of_combining_marks(client: Client) -> None:
    refused = heartbeat(client, userId=ZALGO)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
    assert "combining marks" in json.dumps(refused.json())
    refused = heartbeat(client, deviceName="TV" + "\u0301" * 60)
    assert refused.status_code == 400 and "deviceName" in json.dumps(refused.json())
    assert heartbeat(client, deviceName=unicodedata.normalize("NFD", "Tiếng Việt")).status_code == 200


def test_a_token_plan_follows_the_id_rule(client: Client, token_keys) -> None:
    for plan in (f"premium{RLO}cisab", ZALGO):
        refused = heartbeat(client, token=make_token("alice", plan=plan))
        assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"
        assert "plan" in refused.json()["message"]
    assert heartbeat(client, token=make_token("alice", plan="premium")).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/dashboard/user/evict/", "/dashboard/user/evict-all/"])
@pytest.mark.parametrize("reason", [f"caller asked{RLO}txet desrever", ZALGO[:100]])
def test_a_reason_that_breaks_the_rule_evicts_nothing_and_says_why(staff_client: Client, url: str, reason: str) -> None:
    assert heartbeat(Client(), sessionId="s1").status_code == 200
    answer = staff_client.post(url, {"id": "alice", "session": "s1", "reason": reason}, follow=True)
    assert answer.redirect_chain[-1][0] == "/dashboard/user/?id=alice"
    shown = answer.content.decode()
    assert "Nothing was done: the reason is not valid." in shown
    assert [s.session_id for s in get_live_state().sessions("alice")] == ["s1"]
    assert not AuditRecord.objects.exists()


@pytest.mark.django_db
def test_the_evict_command_refuses_such_a_reason_too() -> None:
    assert heartbeat(Client(), sessionId="s1").status_code == 200
    with pytest.raises(CommandError, match="--reason: Must not contain U\\+202E"):
        call_command("evict", "alice", "--session", "s1", "--reason", f"x{RLO}y")
    assert [s.session_id for s in get_live_state().sessions("alice")] == ["s1"]


@pytest.mark.django_db
def test_audit_text_is_shown_isolated_on_the_user_page_and_in_the_admin(staff_client: Client, staff_user) -> None:
    # Right-to-left words are valid text; isolated, they cannot reorder the columns around them.
    AuditRecord.objects.create(
        actor_name="support", action="evict_all", stream_user_id="alice", detail="0 sessions: ", reason="שלום 123"
    )
    page = staff_client.get("/dashboard/user/", {"id": "alice"}).content.decode()
    assert '<td><bdi class="sl-text">שלום 123</bdi></td>' in page
    assert '<bdi class="sl-text">support</bdi>' in page
    staff_user.is_superuser = True
    staff_user.save()
    listing = staff_client.get("/admin/dashboard/auditrecord/").content.decode()
    assert '<bdi class="sl-text">שלום 123</bdi>' in listing
    assert '<bdi class="sl-id">alice</bdi>' in listing
