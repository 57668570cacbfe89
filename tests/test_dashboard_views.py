"""The staff dashboard through Django's test client, on a real Redis."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from django.test import Client

from dashboard.models import AuditRecord
from heartbeat.services import get_live_state, get_policy_store, get_stream_manager
from tests.conftest import make_token

NONE = "\N{EN DASH}"  # what the user page shows for an input a session did not send

pytestmark = pytest.mark.django_db

PAGES = [
    "/dashboard/",
    "/dashboard/users/",
    "/dashboard/user/?id=alice",
    "/dashboard/user/evict/?id=alice&session=s0",
    "/dashboard/user/evict-all/?id=alice",
]
POSTS = [
    ("/dashboard/user/evict/", {"id": "alice", "session": "s0"}),
    ("/dashboard/user/evict-all/", {"id": "alice"}),
    ("/dashboard/user/limit/", {"id": "alice", "limit": "5"}),
]


def play(user: str, sessions: int, stream: str = "movie") -> None:
    for i in range(sessions):
        get_stream_manager().admit(user, stream, f"s{i}")
    # The live lists and totals read the shared activity keys, written by the activity flush.
    get_stream_manager().flush_activity()


def user_page(user_id: str) -> str:
    return "/dashboard/user/?" + urlencode({"id": user_id})


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, url: str) -> None:
    play("alice", 1)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", PAGES)
def test_non_staff_users_are_sent_to_the_login_page(outsider_client: Client, url: str) -> None:
    play("alice", 1)
    response = outsider_client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_outsiders_can_change_nothing(client: Client, outsider_client: Client, url: str, data: dict) -> None:
    play("alice", 2)
    assert outsider_client.post(url, data).status_code == 302
    assert len(get_live_state().sessions("alice")) == 2
    assert get_live_state().get_limit("alice").override is None
    assert AuditRecord.objects.count() == 0


@pytest.mark.parametrize("url", PAGES)
def test_staff_see_every_page(staff_client: Client, url: str) -> None:
    play("alice", 1)
    assert staff_client.get(url).status_code == 200


def test_admin_index_links_to_the_dashboard(staff_client: Client) -> None:
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    assert b'href="/dashboard/"' in response.content


def test_overview_shows_live_totals_and_recent_activity(staff_client: Client) -> None:
    play("alice", 3)
    play("bob", 1)
    get_stream_manager().admit("alice", "movie", "refused")
    get_stream_manager().flush_activity()
    content = staff_client.get("/dashboard/").content.decode()
    assert re.search(r'id="stat-live-users">2<', content)
    assert re.search(r'id="stat-live-sessions">4<', content)
    assert re.search(r'id="stat-at-limit">1<', content)
    assert re.search(r'id="stat-heartbeats">5<', content)
    assert re.search(r'id="stat-refusals">1<', content)
    assert "<svg" in content and "<polyline" in content


def test_search_by_exact_user_id_shows_the_sessions(staff_client: Client) -> None:
    play("alice", 2, stream="movie-1138")
    response = staff_client.get("/dashboard/user/", {"id": "alice"})
    content = response.content.decode()
    assert content.count('data-session="') == 2 and "movie-1138" in content
    assert "2 of 3" in content


def test_user_page_shows_device_names_and_where_the_limit_comes_from(staff_client: Client) -> None:
    get_stream_manager().admit("alice", "movie", "tv", device_name="Living <room> TV", max_streams=2)
    content = staff_client.get(user_page("alice")).content.decode()
    assert "Living &lt;room&gt; TV" in content
    assert 'data-source="token"' in content and "2 at once" in content
    get_stream_manager().set_limit_override("alice", 5)
    content = staff_client.get(user_page("alice")).content.decode()
    assert 'data-source="override"' in content and "5 at once" in content


def test_search_is_exact_not_a_prefix_match(staff_client: Client) -> None:
    play("alice", 2)
    content = staff_client.get("/dashboard/user/", {"id": "ali"}).content.decode()
    assert "No live session." in content


@pytest.mark.parametrize("bad", ["", "x" * 129, "tab\there"])
def test_search_with_an_invalid_id_says_why(staff_client: Client, bad: str) -> None:
    response = staff_client.get("/dashboard/user/", {"id": bad})
    assert response.status_code == 400
    assert b"errornote" in response.content


def test_ids_are_shown_escaped(staff_client: Client) -> None:
    hostile = "<script>alert(1)</script>"
    get_stream_manager().admit(hostile, hostile, hostile)
    get_stream_manager().flush_activity()
    for url in (user_page(hostile), "/dashboard/users/"):
        content = staff_client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in content
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_live_users_are_paginated_most_recent_first(staff_client: Client) -> None:
    for n in range(120):
        get_stream_manager().admit(f"user-{n:03d}", "movie", "s0")
    get_stream_manager().flush_activity()
    first = staff_client.get("/dashboard/users/").content.decode()
    assert "120 live users" in first and "Page 1 of 3" in first
    assert first.count("<tr><td><a href=") == 50
    assert first.index("user-119") < first.index("user-118")
    last = staff_client.get("/dashboard/users/", {"page": 3}).content.decode()
    assert last.count("<tr><td><a href=") == 20 and "user-000" in last
    assert staff_client.get("/dashboard/users/", {"page": "nonsense"}).status_code == 200


def test_evict_asks_for_confirmation_before_doing_anything(staff_client: Client) -> None:
    play("alice", 2)
    response = staff_client.get("/dashboard/user/evict/", {"id": "alice", "session": "s0"})
    assert b'id="confirm-evict"' in response.content
    assert len(get_live_state().sessions("alice")) == 2


def test_evict_frees_the_slot_and_writes_an_audit_record(staff_client: Client, staff_user) -> None:
    play("alice", 3)
    response = staff_client.post("/dashboard/user/evict/", {"id": "alice", "session": "s1"})
    assert response.status_code == 302 and response["Location"] == user_page("alice")
    assert [s.session_id for s in get_live_state().sessions("alice")] == ["s0", "s2"]
    record = AuditRecord.objects.get()
    assert (record.actor, record.action, record.stream_user_id, record.session_id) == (
        staff_user,
        "evict_session",
        "alice",
        "s1",
    )
    page = staff_client.get(user_page("alice")).content.decode()
    assert "Evicted a session" in page and "support" in page


def test_evict_all_frees_every_slot(staff_client: Client) -> None:
    play("alice", 3)
    staff_client.post("/dashboard/user/evict-all/", {"id": "alice"})
    assert get_live_state().sessions("alice") == []
    assert AuditRecord.objects.get().action == "evict_all"


def test_posts_without_a_csrf_token_are_refused(staff_user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    play("alice", 2)
    for url, data in POSTS:
        assert client.post(url, data).status_code == 403
    assert len(get_live_state().sessions("alice")) == 2
    assert AuditRecord.objects.count() == 0


def test_posts_with_the_csrf_token_from_the_page_work(staff_user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    play("alice", 2)
    page = client.get("/dashboard/user/evict/", {"id": "alice", "session": "s0"}).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post("/dashboard/user/evict/", {"id": "alice", "session": "s0", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert [s.session_id for s in get_live_state().sessions("alice")] == ["s1"]


def test_setting_a_limit_override_is_applied_and_audited(staff_client: Client) -> None:
    response = staff_client.post("/dashboard/user/limit/", {"id": "alice", "limit": "5"})
    assert response.status_code == 302
    assert get_live_state().get_limit("alice").override == 5
    assert AuditRecord.objects.get().detail == "limit 3 -> 5 (override 5)"
    assert "5 at once" in staff_client.get(user_page("alice")).content.decode()


def test_clearing_the_override_restores_the_default(staff_client: Client) -> None:
    staff_client.post("/dashboard/user/limit/", {"id": "alice", "limit": "7"})
    staff_client.post("/dashboard/user/limit/", {"id": "alice", "clear": "1"})
    assert get_live_state().get_limit("alice").override is None
    assert [r.action for r in AuditRecord.objects.order_by("id")] == ["set_limit", "clear_limit"]


@pytest.mark.parametrize("bad", ["0", "51", "-3", "abc", "", "2.5"])
def test_bad_limits_are_refused_with_a_message(staff_client: Client, bad: str) -> None:
    response = staff_client.post("/dashboard/user/limit/", {"id": "alice", "limit": bad}, follow=True)
    assert "Limit not changed" in response.content.decode()
    assert get_live_state().get_limit("alice").override is None
    assert AuditRecord.objects.count() == 0


def test_redis_down_shows_a_page_not_a_crash(staff_client: Client, settings) -> None:
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    response = staff_client.get("/dashboard/")
    assert response.status_code == 503 and b"Redis cannot be reached" in response.content


def test_a_staff_page_not_found_is_logged_once_with_its_correlation_id(staff_client: Client, json_log_lines) -> None:
    response = staff_client.get("/dashboard/no-such-page/", headers={"X-Correlation-ID": "staff-404"})
    assert response.status_code == 404
    lines = json_log_lines()
    assert not [line for line in lines if line["message"].startswith("Not Found")]
    [finished] = [line for line in lines if line["message"] == "request_finished"]
    assert finished["status"] == 404 and finished["correlationId"] == "staff-404"


@pytest.mark.parametrize("url", PAGES)
def test_pages_are_never_cached(staff_client: Client, url: str) -> None:
    play("alice", 1)
    assert "no-store" in staff_client.get(url)["Cache-Control"]


def test_evicting_a_session_that_is_not_live_says_so_and_arms_no_cool_down(staff_client: Client) -> None:
    play("alice", 1)
    response = staff_client.post("/dashboard/user/evict/", {"id": "alice", "session": "gone"}, follow=True)
    assert "is not live: nothing was evicted and no cool-down was set" in response.content.decode()
    # The session may start now: it was never evicted.
    assert get_stream_manager().admit("alice", "movie", "gone").allowed
    assert AuditRecord.objects.get().detail.startswith("not live")


def test_clear_override_works_whatever_the_number_field_holds(staff_client: Client) -> None:
    staff_client.post("/dashboard/user/limit/", {"id": "alice", "limit": "7"})
    staff_client.post("/dashboard/user/limit/", {"id": "alice", "limit": "abc", "clear": "1"})
    assert get_live_state().get_limit("alice").override is None


@pytest.mark.parametrize("number", ["4", "99999999999999999999999"])
def test_a_page_past_the_end_says_so_and_links_to_the_last(staff_client: Client, number: str) -> None:
    play("alice", 1)
    response = staff_client.get("/dashboard/users/", {"page": number})
    content = response.content.decode()
    assert response.status_code == 200 and "is past the end" in content and 'href="?page=1"' in content
    assert "Nobody is watching" not in content


def test_view_site_leads_to_the_dashboard(staff_client: Client) -> None:
    content = staff_client.get("/admin/").content.decode()
    assert 'href="/dashboard/">View site' in content


def test_ids_are_isolated_from_the_text_around_them(staff_client: Client) -> None:
    hebrew = "משתמש-42"
    get_stream_manager().admit(hebrew, "סרט", "טלוויזיה")
    get_stream_manager().flush_activity()
    content = staff_client.get(user_page(hebrew)).content.decode()
    assert f'<bdi class="sl-id">{hebrew}</bdi>' in content
    assert '<bdi class="sl-id">טלוויזיה</bdi>' in content
    listed = staff_client.get("/dashboard/users/").content.decode()
    assert f'<bdi class="sl-id">{hebrew}</bdi>' in listed
    confirm = staff_client.get("/dashboard/user/evict/", {"id": hebrew, "session": "טלוויזיה"}).content.decode()
    assert confirm.count('<bdi class="sl-id">') >= 3


def test_live_users_can_jump_to_a_page_and_numbers_have_separators(staff_client: Client) -> None:
    for n in range(1_060):
        get_stream_manager().admit(f"user-{n:04d}", "movie", "s0")
    get_stream_manager().flush_activity()
    content = staff_client.get("/dashboard/users/", {"page": 21}).content.decode()
    assert "1,060 live users" in content and "Page 21 of 22" in content
    assert 'id="jump-page" min="1" max="22" value="21"' in content
    assert "user-0059" in content and "user-0060" not in content


def test_overview_says_as_of_when_and_draws_charts_with_axes(staff_client: Client) -> None:
    play("alice", 2)
    content = staff_client.get("/dashboard/").content.decode()
    assert 'id="as-of"' in content and "UTC" in content and 'id="auto-refresh"' in content
    assert content.count('role="img" aria-label=') == 2 and content.count('class="axis-label"') >= 10
    assert 'class="grid"' in content


@pytest.mark.parametrize(
    ("highest", "labels"),
    [
        (0, ["0", "1"]),
        (2, ["0", "1", "2"]),
        (4, ["0", "1", "2", "3", "4", "5"]),
        (17, ["0", "4", "8", "12", "16", "20"]),
    ],
)
def test_chart_axes_are_labelled_with_whole_numbers(highest: int, labels: list[str]) -> None:
    from datetime import UTC, datetime

    from dashboard.charts import chart

    drawn = chart(
        "t", "c", [0, highest], [datetime(2026, 1, 1, 12, 0, tzinfo=UTC), datetime(2026, 1, 1, 12, 1, tzinfo=UTC)]
    )
    assert [tick.label for tick in drawn.y_ticks] == labels
    assert [tick.label for tick in drawn.x_ticks] == ["12:00"]


def test_an_eviction_reason_is_kept_in_the_audit_trail(staff_client: Client) -> None:
    play("alice", 3)
    confirm = staff_client.get("/dashboard/user/evict-all/", {"id": "alice"}).content.decode()
    assert 'name="reason"' in confirm
    staff_client.post("/dashboard/user/evict/", {"id": "alice", "session": "s0", "reason": "caller asked"})
    staff_client.post("/dashboard/user/evict-all/", {"id": "alice", "reason": "account shared"})
    assert [r.reason for r in AuditRecord.objects.order_by("id")] == ["caller asked", "account shared"]
    page = staff_client.get(user_page("alice")).content.decode()
    assert "caller asked" in page and "account shared" in page


def test_an_over_long_reason_is_refused_and_nothing_is_evicted(staff_client: Client) -> None:
    play("alice", 2)
    staff_client.post("/dashboard/user/evict/", {"id": "alice", "session": "s0", "reason": "x" * 201})
    assert len(get_live_state().sessions("alice")) == 2 and AuditRecord.objects.count() == 0


def test_live_users_can_be_filtered_to_those_at_their_limit(staff_client: Client) -> None:
    play("alice", 3)
    play("bob", 1)
    play("carol", 3)
    content = staff_client.get("/dashboard/users/", {"filter": "at-limit"}).content.decode()
    assert "2 live users at their limit" in content
    assert ">alice<" in content and ">carol<" in content and ">bob<" not in content


def test_find_lists_accounts_by_the_start_of_their_id(staff_client: Client) -> None:
    play("family-42", 1)
    play("family-43", 1)
    play("friends-1", 1)
    get_stream_manager().stop("family-43", "s0")
    content = staff_client.get("/dashboard/find/", {"id": "fam"}).content.decode()
    rows = re.findall(r"<tr><td><a href=[^>]*><bdi[^>]*>([^<]*)</bdi></a></td><td>([a-z ]+)</td>", content)
    assert rows == [("family-42", "watching"), ("family-43", "not watching")]


def test_find_says_when_nobody_with_that_id_was_heard_in_a_day(staff_client: Client) -> None:
    play("alice", 1)
    content = staff_client.get("/dashboard/find/", {"id": "bob"}).content.decode()
    assert 'id="not-found"' in content and "last 24 hours" in content


def test_the_user_page_tells_not_watching_from_never_seen(staff_client: Client) -> None:
    play("alice", 1)
    get_stream_manager().stop("alice", "s0")
    get_stream_manager().flush_activity()
    assert "Not watching now; last heartbeat" in staff_client.get(user_page("alice")).content.decode()
    assert (
        "No heartbeat from this account in the last 24 hours" in staff_client.get(user_page("nobody")).content.decode()
    )


def test_the_user_page_lists_recent_refusals_newest_first(staff_client: Client) -> None:
    play("alice", 3)
    get_stream_manager().admit("alice", "film-a", "phone")
    get_stream_manager().admit("alice", "film-b", "tablet")
    get_stream_manager().flush_activity()
    content = staff_client.get(user_page("alice")).content.decode()
    refusals = content[content.index('id="refusals"') :]
    assert refusals.index("tablet") < refusals.index("phone")
    assert refusals.count("concurrency_limit_reached") == 2


def test_the_sharing_page_ranks_refused_and_many_session_accounts(staff_client: Client) -> None:
    play("busy", 3)
    for n in range(5):
        get_stream_manager().admit("busy", "movie", f"extra-{n}")  # refused
    play("quiet", 1)
    get_stream_manager().flush_activity()
    content = staff_client.get("/dashboard/sharing/").content.decode()
    today = content[: content.index("Yesterday")]
    refused = today[today.index('class="refused-most"') : today.index('class="distinct-most"')]
    assert re.search(r"busy</bdi></a></td><td>5<", refused) and "quiet" not in refused
    distinct = today[today.index('class="distinct-most"') :]
    assert distinct.index("busy") < distinct.index("quiet")
    assert "never a reason for automatic" in content


def test_the_user_page_shows_each_evicted_sessions_cool_down_left(staff_client: Client) -> None:
    play("alice", 2)
    staff_client.post("/dashboard/user/evict/", {"id": "alice", "session": "s1"})
    content = staff_client.get(user_page("alice")).content.decode()
    cooling = content[content.index('id="cooldowns"') :]
    assert re.search(r'<bdi class="sl-id">s1</bdi></td><td>(299|300) s<', cooling)
    assert re.search(r"<td>in (3[0-9]|40) s</td>", content)  # the session TTL (40 s), less the page's own time


def test_a_refusal_on_the_user_page_names_the_refused_device(staff_client: Client) -> None:
    manager = get_stream_manager()
    for i in range(3):
        manager.admit("alice", "movie", f"s{i}")
    assert not manager.admit("alice", "movie", "s3", device_name="Grandma's laptop").allowed
    manager.flush_activity()
    content = staff_client.get(user_page("alice")).content.decode()
    assert "Grandma&#x27;s laptop" in content and "concurrency_limit_reached" in content


def test_evict_all_can_block_new_sessions_for_a_while_and_the_block_can_be_lifted(staff_client: Client) -> None:
    play("alice", 2)
    confirm = staff_client.get("/dashboard/user/evict-all/", {"id": "alice"}).content.decode()
    assert 'name="block_minutes"' in confirm
    staff_client.post("/dashboard/user/evict-all/", {"id": "alice", "block_minutes": "60", "reason": "resale"})
    refused = get_stream_manager().admit("alice", "movie", "new-screen")
    assert refused.outcome.value == "blocked"
    page = staff_client.get(user_page("alice")).content.decode()
    assert 'id="blocked"' in page and 'id="unblock"' in page
    assert [r.action for r in AuditRecord.objects.order_by("id")] == ["evict_all", "block_new"]
    staff_client.post("/dashboard/user/unblock/", {"id": "alice"})
    assert get_stream_manager().admit("alice", "movie", "new-screen").allowed
    assert AuditRecord.objects.order_by("id").last().action == "unblock_new"


def test_support_viewers_cannot_lift_a_block(viewer_client: Client) -> None:
    get_stream_manager().block_new_sessions("alice", 600)
    assert viewer_client.post("/dashboard/user/unblock/", {"id": "alice"}).status_code == 403
    assert get_live_state().blocked_until("alice") is not None
    assert 'id="unblock"' not in viewer_client.get(user_page("alice")).content.decode()


def test_live_users_show_each_accounts_sessions_against_its_limit(staff_client: Client) -> None:
    play("alice", 3)
    play("bob", 1)
    get_stream_manager().set_limit_override("bob", 5)
    content = staff_client.get("/dashboard/users/").content.decode()
    assert re.search(r">alice</bdi></a></td><td>3 of 3<", content)
    assert re.search(r">bob</bdi></a></td><td>1 of 5<", content)


def test_the_block_on_new_sessions_keeps_the_reason_in_its_audit_record(staff_client: Client) -> None:
    play("alice", 2)
    staff_client.post("/dashboard/user/evict-all/", {"id": "alice", "block_minutes": "15", "reason": "resale"})
    records = [(r.action, r.reason) for r in AuditRecord.objects.order_by("id")]
    assert records == [("evict_all", "resale"), ("block_new", "resale")]


# --- Policies on the user page (issue 20) ---------------------------------------------------------------------

FAMILY = {
    "default": {"maxStreams": 3},
    "plans": {
        "basic": {"maxStreams": 1},
        "family": {"maxStreams": 4, "devices": {"mobile": 2, "tv": 3}, "pools": {"live": 1}, "weights": {"uhd": 2},
                   "maxNetworks": 2, "networkRule": "block"},
    },
    "streams": {"live": ["live-*"], "free": ["trailer-*"]},
    "uncountedPools": ["free"],
    "sameDeviceTakeover": True,
    "deviceLabels": {"mobile": "phones"},
}  # fmt: skip


def play_family(user: str = "house") -> str:
    """Two phones, a third one refused, a TV in UHD and a free trailer under the family plan; the decision id."""
    from heartbeat.limiter.decisions import SessionInputs

    get_policy_store().apply(FAMILY, applied_by="test")
    manager = get_stream_manager()

    def admit(session: str, stream: str = "movie", network: str = "192.0.2.0/24", **inputs: str):
        return manager.admit(user, stream, session, plan="family", network=network, inputs=SessionInputs(**inputs))

    assert admit("p1", device_class="mobile", device_id="phone-one").allowed
    assert admit("p2", device_class="mobile", device_id="phone-two", network="2001:db8:7700::/56").allowed
    refused = admit("p3", device_class="mobile", device_id="phone-three")
    assert refused.rule is not None and refused.rule.name == "devices.mobile" and refused.decision_id
    assert admit("tv", device_class="tv", device_id="tv-1", quality="uhd").allowed
    assert admit("trailer", "trailer-9", device_class="tv", device_id="tv-2").allowed
    manager.flush_activity()
    return refused.decision_id


def test_the_user_page_shows_each_sessions_policy_inputs_and_network_prefix(staff_client: Client) -> None:
    play_family()
    content = staff_client.get(user_page("house")).content.decode()
    rows = {m[1]: m[2] for m in re.finditer(r'<tr data-session="([^"]+)">(.*?)</tr>', content, re.S)}
    rows = {re.sub(r"<[^>]+>", "", k): v for k, v in rows.items()}
    assert set(rows) == {"p1", "p2", "tv", "trailer"}

    def cell(session: str, name: str) -> str:
        return re.sub(r"<[^>]+>", "", re.search(rf'class="{name}">(.*?)</td>', rows[session], re.S).group(1))

    assert [cell("p1", n) for n in ("device-class", "device-id", "quality", "pool", "slots", "network")] == [
        "mobile", "phone-one", NONE, NONE, "1", "192.0.2.0/24",
    ]  # fmt: skip
    assert cell("p2", "network") == "2001:db8:7700::/56"
    assert (cell("tv", "quality"), cell("tv", "slots")) == ("uhd", "2")
    assert (cell("trailer", "pool"), cell("trailer", "slots")) == ("free", "uncounted")


def test_the_user_page_names_each_refusals_rule_and_finds_its_decision_id(staff_client: Client) -> None:
    decision_id = play_family()
    content = staff_client.get(user_page("house")).content.decode()
    row = re.search(rf'<tr id="decision-{decision_id}">(.*?)</tr>', content, re.S).group(1)
    assert "<code>devices.mobile</code>" in row and f"<code>{decision_id}</code>" in row
    found = staff_client.get(user_page("house") + f"&decision={decision_id.upper()}").content.decode()
    assert f'<tr id="decision-{decision_id}" class="found">' in found
    assert "by the rule <code>devices.mobile</code>; highlighted below" in found
    missing = staff_client.get(user_page("house") + "&decision=0123456789abcdef").content.decode()
    assert "is not among this account's recent refusals" in missing and 'class="found"' not in missing
    bad = staff_client.get(user_page("house") + "&decision=%3Cscript%3E").content.decode()
    assert "is not a decision id" in bad and "<script>" not in bad


def test_the_user_page_shows_the_rules_of_the_default_and_each_plan_after_inheritance(staff_client: Client) -> None:
    play_family()
    content = staff_client.get(user_page("house")).content.decode()
    policy = content[content.index('id="effective-policy"') :]
    assert "Policy version 1 is in force" in policy
    rows = dict(re.findall(r'<tr data-plan="([^"]+)"[^>]*>(.*?)</tr>', policy, re.S))
    assert list(rows) == ["default", "basic", "family"]
    assert "<td>4</td><td>mobile 2, tv 3</td><td>live 1</td><td>uhd 2</td><td>2 (block)</td>" in rows["family"]
    # The plan is not stored: the plans whose maxStreams is the account's limit are marked, not guessed.
    assert "matches this account's limit" in rows["family"] and "matches" not in rows["basic"]
    assert 'data-plan="family" class="applies"' in policy
    assert "free count against nothing" in policy and "sameDeviceTakeover" in policy


def test_without_a_policy_the_user_page_says_the_settings_make_the_rules(staff_client: Client) -> None:
    play("alice", 1)
    content = staff_client.get(user_page("alice")).content.decode()
    assert "No policy document is applied" in content
    assert 'data-plan="default" class="applies"><td><bdi class="sl-id">default</bdi></td><td>3</td>' in content


def test_staff_without_the_view_permission_see_no_device_or_network(roleless_staff_client: Client) -> None:
    decision_id = play_family()
    response = roleless_staff_client.get(user_page("house") + f"&decision={decision_id}")
    content = response.content.decode()
    assert response.status_code == 403
    for secret in ("phone-one", "192.0.2", "2001:db8", decision_id, "devices.mobile", "mobile"):
        assert secret not in content


def test_the_player_api_never_shows_devices_or_networks_not_even_the_accounts_own(client: Client, token_keys) -> None:
    play_family("house")
    own = client.get("/sessions", headers={"Authorization": f"Bearer {make_token('house', plan='family')}"})
    assert own.status_code == 200
    assert {key for s in own.json()["sessions"] for key in s} == {
        "sessionId", "streamId", "deviceName", "startedAt", "lastHeartbeatAt",
    }  # fmt: skip
    other = client.get("/sessions", headers={"Authorization": f"Bearer {make_token('stranger')}"})
    assert other.status_code == 200 and other.json()["sessions"] == []
    # A refusal lists the account's screens to its own token only, and without their devices or networks.
    refused = client.post(
        "/heartbeat", {"streamId": "m", "sessionId": "p4", "deviceClass": "mobile", "deviceId": "phone-four"},
        content_type="application/json", headers={"Authorization": f"Bearer {make_token('house', plan='family')}"},
    )  # fmt: skip
    assert refused.status_code == 400 and refused.json()["rule"]["name"] == "maxStreams"
    assert len(refused.json()["sessions"]) == 4
    for body in (own.content, other.content, refused.content):
        for secret in (b"phone-one", b"192.0.2", b"2001:db8", b"tv-1"):
            assert secret not in body
