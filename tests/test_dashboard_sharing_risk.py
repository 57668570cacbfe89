"""The Sharing signals page's risk view and the "not sharing" mark, through Django's test client on a real Redis."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from django.test import Client

from dashboard.models import AuditRecord, SharingMark
from heartbeat.limiter.event_reader import read_events
from heartbeat.limiter.events import Event, EventType
from heartbeat.limiter.risk import RiskReport
from heartbeat.services import get_risk_store, get_stream_manager
from tests.conftest import make_staff

pytestmark = pytest.mark.django_db

RISK = "/dashboard/sharing/risk/"
MARK = "/dashboard/sharing/mark/"
T0 = 1_796_000_000_000


@pytest.fixture
def lead(django_user_model):
    """A support lead: holds mark_not_sharing (and change_policy)."""
    return make_staff(django_user_model, "lead-ana", "Support lead")


@pytest.fixture
def lead_client(client: Client, lead) -> Client:
    client.force_login(lead)
    return client


def save_scores(scores: dict[str, int], at_ms: int = T0) -> None:
    """Scores as score_sharing keeps them, each with one line of evidence."""
    reports = [RiskReport(user, score, [f"{score // 10} networks in 3 days"]) for user, score in scores.items()]
    reports.sort(key=lambda r: -r.score)
    get_risk_store().save(reports, flag_score=60, scored_at_ms=at_ms)


def rows(content: str) -> list[tuple[str, str]]:
    """(user id, score cell's number) of each row of the risk table, in page order."""
    table = content.split('id="risk"')[1].split("</table>")[0]
    return re.findall(r'<tr data-user="([^"]+)">.*?class="risk-score">(\d+)', table, re.DOTALL)


# --- Who may see and do what ------------------------------------------------------------------


@pytest.mark.parametrize("url", [RISK])
def test_strangers_are_sent_to_the_login_page(client: Client, outsider_client: Client, url: str) -> None:
    assert Client().get(url)["Location"].startswith("/admin/login/")
    assert outsider_client.get(url)["Location"].startswith("/admin/login/")


def test_strangers_cannot_mark(outsider_client: Client) -> None:
    assert Client().post(MARK, {"id": "alice"})["Location"].startswith("/admin/login/")
    assert outsider_client.post(MARK, {"id": "alice"})["Location"].startswith("/admin/login/")
    assert not SharingMark.objects.exists() and not AuditRecord.objects.exists()


def test_staff_without_a_support_role_get_403(roleless_staff_client: Client) -> None:
    save_scores({"alice": 80})
    response = roleless_staff_client.get(RISK)
    assert response.status_code == 403 and b"alice" not in response.content


def test_viewers_and_agents_see_the_scores_but_cannot_mark(viewer_client: Client, django_user_model) -> None:
    save_scores({"alice": 80})
    agent = Client()
    agent.force_login(make_staff(django_user_model, "agent-bo", "Support agent"))
    for client in (viewer_client, agent):
        content = client.get(RISK).content.decode()
        assert rows(content) == [("alice", "80")]
        assert "Mark not sharing" not in content and 'name="reason"' not in content
        assert client.post(MARK, {"id": "alice", "reason": "family"}).status_code == 403
    assert not SharingMark.objects.exists() and not AuditRecord.objects.exists()


def test_a_mark_needs_the_csrf_token(lead) -> None:
    save_scores({"alice": 80})
    client = Client(enforce_csrf_checks=True)
    client.force_login(lead)
    assert client.post(MARK, {"id": "alice"}).status_code == 403
    assert not SharingMark.objects.exists()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(RISK).content.decode()).group(1)
    assert client.post(MARK, {"id": "alice", "csrfmiddlewaretoken": token}).status_code == 302
    assert SharingMark.objects.get().stream_user_id == "alice"


def test_only_post_marks(lead_client: Client) -> None:
    assert lead_client.get(MARK, {"id": "alice"}).status_code == 405
    assert not SharingMark.objects.exists()


# --- The view ---------------------------------------------------------------------------------


def test_the_view_says_a_score_is_a_signal_not_proof_and_when_it_was_scored(viewer_client: Client) -> None:
    content = viewer_client.get(RISK).content.decode()
    assert "A score is a signal, not proof." in content
    assert "Not scored yet" in content and "manage.py score_sharing" in content
    save_scores({"alice": 80}, at_ms=T0)
    content = viewer_client.get(RISK).content.decode()
    assert "2026-11-30 00:53 UTC" in content and "Not scored yet" not in content
    assert "<li>" + '<bdi class="sl-text">8 networks in 3 days</bdi>' + "</li>" in content
    assert "10 points for each network past 2" in content  # the weights, from risk.py


def test_the_daily_signals_and_the_risk_view_link_to_each_other(viewer_client: Client) -> None:
    assert f'href="{RISK}"' in viewer_client.get("/dashboard/sharing/").content.decode()
    assert 'href="/dashboard/sharing/"' in viewer_client.get(RISK).content.decode()


def test_the_risk_view_sorts_by_score_either_way_and_by_user(viewer_client: Client) -> None:
    save_scores({"carol": 35, "alice": 80, "bob": 120, "dave": 60})
    by_score = [("bob", "120"), ("alice", "80"), ("dave", "60"), ("carol", "35")]
    assert rows(viewer_client.get(RISK).content.decode()) == by_score
    assert rows(viewer_client.get(RISK, {"sort": "score-asc"}).content.decode()) == by_score[::-1]
    assert [u for u, _ in rows(viewer_client.get(RISK, {"sort": "user"}).content.decode())] == [
        "alice",
        "bob",
        "carol",
        "dave",
    ]
    assert rows(viewer_client.get(RISK, {"sort": "nonsense"}).content.decode()) == by_score


# --- The mark ---------------------------------------------------------------------------------


def test_a_mark_is_audited_and_shows_at_once_as_a_lower_score(lead_client: Client) -> None:
    save_scores({"alice": 80, "bob": 40})
    response = lead_client.post(MARK, {"id": "alice", "reason": "family of five, checked by phone"})
    assert response.status_code == 302 and response["Location"] == RISK
    record = AuditRecord.objects.get()
    assert (record.action, record.stream_user_id, record.actor_name) == ("mark_not_sharing", "alice", "lead-ana")
    assert record.reason == "family of five, checked by phone"
    content = lead_client.get(RISK).content.decode()
    # 80 x 0.25 = 20 until the next scoring: below bob's 40 now.
    assert rows(content) == [("bob", "40"), ("alice", "20")]
    assert "lowered from 80 by the mark" in content and "family of five, checked by phone" in content
    assert "Marked the account not sharing" in lead_client.get("/dashboard/user/?id=alice").content.decode()


def test_clearing_a_mark_is_audited_and_clearing_none_changes_nothing(lead_client: Client) -> None:
    lead_client.post(MARK, {"id": "alice"})
    assert lead_client.post(MARK, {"id": "alice", "clear": "1", "reason": "new evidence"}).status_code == 302
    assert not SharingMark.objects.exists()
    assert [r.action for r in AuditRecord.objects.order_by("id")] == ["mark_not_sharing", "clear_not_sharing"]
    assert AuditRecord.objects.order_by("id").last().reason == "new evidence"
    lead_client.post(MARK, {"id": "alice", "clear": "1"})
    assert AuditRecord.objects.count() == 2


def test_a_reason_that_breaks_the_free_text_rule_is_refused(lead_client: Client) -> None:
    response = lead_client.post(MARK, {"id": "alice", "reason": "ok\u202eevil"}, follow=True)
    assert "Nothing was done: the reason is not valid." in response.content.decode()
    response = lead_client.post(MARK, {"id": "a\x00b"}, follow=True)
    assert "Nothing was done: the user id is not valid." in response.content.decode()
    assert not SharingMark.objects.exists() and not AuditRecord.objects.exists()


def test_the_mark_lowers_the_score_score_sharing_computes(lead_client: Client, settings) -> None:
    settings.EVENTS_ENABLED = True
    settings.MAX_CONCURRENT_STREAMS = 10
    manager = get_stream_manager()
    for n in range(5):
        assert manager.admit("sharer", "movie", f"s{n}", network=f"10.{n}.0.0/24").allowed
    manager.flush_activity()
    call_command("score_sharing", stdout=io.StringIO(), stderr=io.StringIO())
    assert rows(lead_client.get(RISK).content.decode()) == [("sharer", "110")]
    lead_client.post(MARK, {"id": "sharer"})
    call_command("score_sharing", stdout=io.StringIO(), stderr=io.StringIO())
    content = lead_client.get(RISK).content.decode()
    assert rows(content) == [("sharer", str(round(110 * 0.25)))]
    assert "marked not sharing by lead-ana on " in content and "lowered from" not in content
    lead_client.post(MARK, {"id": "sharer", "clear": "1"})
    assert "the next scoring gives the full score back" in lead_client.get(RISK).content.decode()


def test_the_flag_event_is_not_written_for_a_marked_account(lead_client: Client, settings) -> None:
    settings.EVENTS_ENABLED = True
    settings.MAX_CONCURRENT_STREAMS = 10
    manager = get_stream_manager()
    lead_client.post(MARK, {"id": "sharer"})
    for n in range(5):
        manager.admit("sharer", "movie", f"s{n}", network=f"10.{n}.0.0/24")
    manager.flush_activity()
    call_command("score_sharing", stdout=io.StringIO(), stderr=io.StringIO())
    written = [Event.from_json(e.raw).type for e in read_events(manager.client, manager.keys, 0, 2**62)]
    assert EventType.SESSION_STARTED in written and EventType.ACCOUNT_SHARING_FLAGGED not in written
