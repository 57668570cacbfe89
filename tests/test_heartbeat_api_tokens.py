"""The player API with playback tokens on (and the parts of issue 8 that also hold with them off)."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from redis import Redis

from heartbeat.limiter import metrics
from heartbeat.limiter.activity import FLUSHER
from tests.conftest import TOKEN_SECRETS, make_token
from tests.live_state_helpers import reader_of

URL = "/heartbeat"
STOP_URL = "/heartbeat/stop"
SESSIONS_URL = "/sessions"


def body(user: str | None = "alice", stream: str = "movie", session: str = "s0", **extra: object) -> dict:
    data: dict = {"streamId": stream, "sessionId": session, **extra}
    if user is not None:
        data["userId"] = user
    return data


def post(client: Client, data: object, url: str = URL, token: str | None = None, content_type="application/json"):
    raw = data if isinstance(data, (str, bytes)) else json.dumps(data)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(url, raw, content_type=content_type, headers=headers, CONTENT_TYPE=content_type)


def get_sessions(client: Client, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(SESSIONS_URL, headers=headers)


def keys_under(redis_client: Redis, prefix: str) -> list[bytes]:
    return list(redis_client.scan_iter(match=f"{prefix}:*"))


def counter(name: str, **labels: str) -> float:
    metrics.HEARTBEAT_TALLY.flush()  # as a scrape does
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def tokens_on(token_keys) -> None:
    """Playback tokens on, with the test keys k1 and k2."""


# --- 401 and 403 ---------------------------------------------------------------------


@pytest.mark.usefixtures("tokens_on")
def test_a_heartbeat_without_a_token_is_401_token_required_and_touches_no_key(
    client: Client, redis_client: Redis, key_prefix: str
) -> None:
    before = counter("streamlimit_token_failures_total", reason="missing")
    for url in (URL, STOP_URL):
        response = post(client, body(), url=url)
        assert response.status_code == 401
        assert response.json()["code"] == "token_required" and response.json()["message"]
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert get_sessions(client, None).status_code == 401
    assert keys_under(redis_client, key_prefix) == []
    assert counter("streamlimit_token_failures_total", reason="missing") == before + 3


@pytest.mark.usefixtures("tokens_on")
@pytest.mark.parametrize(
    ("token", "code"),
    [
        (make_token("alice", expires_in=-120), "token_expired"),
        (make_token("alice", kid="unknown", secret=TOKEN_SECRETS["k1"]), "invalid_token"),
        (make_token("alice", kid="k1", secret=TOKEN_SECRETS["k2"]), "invalid_token"),
        ("eyJhbGciOiJub25lIiwia2lkIjoiazEifQ.eyJzdWIiOiJhbGljZSJ9.", "invalid_token"),
        ("garbage", "invalid_token"),
        ("", "invalid_token"),
    ],
    ids=["expired", "unknown kid", "wrong key", "alg none", "garbage", "empty"],
)
def test_an_unusable_token_is_401_and_touches_no_key(
    client: Client, redis_client: Redis, key_prefix: str, token: str, code: str
) -> None:
    for url in (URL, STOP_URL):
        response = post(client, body(), url=url, token=token)
        assert response.status_code == 401, response.content
        assert response.json()["code"] == code
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert get_sessions(client, token).json()["code"] == code
    assert keys_under(redis_client, key_prefix) == []


@pytest.mark.usefixtures("tokens_on")
def test_another_auth_scheme_is_an_invalid_token(client: Client) -> None:
    response = client.post(
        URL, json.dumps(body()), content_type="application/json", headers={"Authorization": "Basic YWxpY2U6eA=="}
    )
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"


@pytest.mark.usefixtures("tokens_on")
def test_a_token_is_checked_before_the_body(client: Client) -> None:
    response = post(client, {"userId": ""}, token="garbage")
    assert response.status_code == 401


@pytest.mark.usefixtures("tokens_on")
def test_both_rotation_keys_are_accepted(client: Client) -> None:
    for n, kid in enumerate(("k1", "k2")):
        response = post(client, body(session=f"s{n}"), token=make_token("alice", kid=kid))
        assert response.status_code == 200, response.content


@pytest.mark.usefixtures("tokens_on")
def test_the_body_may_leave_user_id_out_and_the_token_names_the_account(client: Client, manager) -> None:
    response = post(client, body(user=None), token=make_token("alice"))
    assert response.status_code == 200
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s0"]


@pytest.mark.usefixtures("tokens_on")
def test_a_user_id_other_than_sub_is_403_token_mismatch(client: Client, redis_client: Redis, key_prefix: str) -> None:
    before = counter("streamlimit_token_failures_total", reason="mismatch")
    for url in (URL, STOP_URL):
        response = post(client, body(user="mallory"), url=url, token=make_token("alice"))
        assert response.status_code == 403 and response.json()["code"] == "token_mismatch"
    assert keys_under(redis_client, key_prefix) == []
    assert counter("streamlimit_token_failures_total", reason="mismatch") == before + 2


@pytest.mark.usefixtures("tokens_on")
def test_a_token_already_verified_still_names_the_only_account_and_session_it_may_play(client: Client) -> None:
    # The worker remembers verified tokens (heartbeat/limiter/tokens.py): the body is checked against them every time.
    account_token, session_token = make_token("alice"), make_token("alice", sid="tv")
    assert post(client, body(user="alice"), token=account_token).status_code == 200
    assert post(client, body(user="alice", session="tv"), token=session_token).status_code == 200
    for token, data in ((account_token, body(user="mallory")), (session_token, body(session="phone"))):
        for url in (URL, STOP_URL):
            response = post(client, data, url=url, token=token)
            assert response.status_code == 403 and response.json()["code"] == "token_mismatch", (url, data)
    assert post(client, body(user="alice", session="s1"), token=account_token).status_code == 200


@pytest.mark.usefixtures("tokens_on")
def test_a_session_id_other_than_sid_is_403_token_mismatch(client: Client, redis_client: Redis, key_prefix) -> None:
    token = make_token("alice", sid="tv")
    assert post(client, body(session="tv"), token=token).status_code == 200
    for url in (URL, STOP_URL):
        response = post(client, body(session="phone"), url=url, token=token)
        assert response.status_code == 403 and response.json()["code"] == "token_mismatch"


@pytest.mark.usefixtures("tokens_on")
def test_invalid_ids_with_a_valid_token_are_400(client: Client, redis_client: Redis, key_prefix: str) -> None:
    response = post(client, {"userId": "alice", "sessionId": ""}, token=make_token("alice"))
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"streamId", "sessionId"}
    assert keys_under(redis_client, key_prefix) == []


def test_with_tokens_off_a_bearer_header_is_ignored_and_the_api_is_as_before(client: Client, settings) -> None:
    settings.PLAYBACK_TOKEN_KEYS = {}
    response = post(client, body(), token="anything")
    assert response.status_code == 200 and response.json()["limitSource"] == "default"
    refused = [post(client, body(session=f"x{i}")) for i in range(3)][-1]
    assert refused.json()["code"] == "concurrency_limit_reached"
    assert "sessions" not in refused.json()
    assert get_sessions(client, None).json()["code"] == "tokens_disabled"


# --- Limits and where they come from ---------------------------------------------------


@pytest.mark.usefixtures("tokens_on")
def test_the_token_max_streams_sets_the_limit(client: Client) -> None:
    token = make_token("alice", maxStreams=1)
    first = post(client, body(), token=token)
    assert (first.json()["limit"], first.json()["limitSource"]) == (1, "token")
    second = post(client, body(session="s1"), token=token)
    assert second.status_code == 400 and second.json()["limitSource"] == "token"


@pytest.mark.usefixtures("tokens_on")
def test_the_plan_sets_the_limit_unless_the_token_has_max_streams(client: Client, settings) -> None:
    settings.PLAN_LIMITS = {"basic": 1, "premium": 4}
    response = post(client, body(), token=make_token("alice", plan="premium"))
    assert (response.json()["limit"], response.json()["limitSource"]) == (4, "plan")
    response = post(client, body(), token=make_token("alice", plan="premium", maxStreams=2))
    assert (response.json()["limit"], response.json()["limitSource"]) == (2, "token")


@pytest.mark.usefixtures("tokens_on")
def test_an_unknown_plan_falls_back_to_the_default_with_a_warning_and_a_metric(
    client: Client, settings, json_log_lines
) -> None:
    settings.PLAN_LIMITS = {"basic": 1}
    before = counter("streamlimit_unknown_plans_total")
    response = post(client, body(), token=make_token("alice", plan="platinum-9000"))
    assert (response.json()["limit"], response.json()["limitSource"]) == (3, "default")
    assert counter("streamlimit_unknown_plans_total") == before + 1
    [warning] = [line for line in json_log_lines() if line["message"] == "unknown plan, default limit used"]
    assert warning["plan"] == "platinum-9000" and warning["level"] == "warning"


@pytest.mark.usefixtures("tokens_on")
def test_a_staff_override_wins_over_the_token(client: Client, manager) -> None:
    manager.set_limit_override("alice", 5)
    response = post(client, body(), token=make_token("alice", maxStreams=1))
    assert (response.json()["limit"], response.json()["limitSource"]) == (5, "override")
    assert get_sessions(client, make_token("alice", maxStreams=1)).json()["limitSource"] == "override"


@pytest.mark.usefixtures("tokens_on")
def test_heartbeats_are_counted_by_limit_source(client: Client, settings) -> None:
    settings.PLAN_LIMITS = {"basic": 2}
    before = {s: counter("streamlimit_heartbeat_limit_source_total", source=s) for s in ("token", "plan", "default")}
    post(client, body(session="a"), token=make_token("alice", maxStreams=3))
    post(client, body(session="b"), token=make_token("alice", plan="basic"))
    post(client, body(session="c"), token=make_token("alice"))
    for source in ("token", "plan", "default"):
        assert counter("streamlimit_heartbeat_limit_source_total", source=source) == before[source] + 1


# --- Who is watching -------------------------------------------------------------------


@pytest.mark.usefixtures("tokens_on")
def test_limit_reached_with_a_token_lists_the_accounts_sessions(client: Client) -> None:
    token = make_token("alice")
    for i, device in enumerate(["Living room TV", "Kid's tablet", "Phone"]):
        post(client, body(session=f"s{i}", stream=f"movie-{i}", deviceName=device), token=token)
    response = post(client, body(session="s3", deviceName="Laptop"), token=token)
    assert response.status_code == 400 and response.json()["code"] == "concurrency_limit_reached"
    sessions = response.json()["sessions"]
    assert [(s["sessionId"], s["streamId"], s["deviceName"]) for s in sessions] == [
        ("s0", "movie-0", "Living room TV"),
        ("s1", "movie-1", "Kid's tablet"),
        ("s2", "movie-2", "Phone"),
    ]
    for s in sessions:
        assert s["startedAt"].endswith("Z") and s["lastHeartbeatAt"].endswith("Z")
        assert abs(_epoch(s["lastHeartbeatAt"]) - time.time()) < 60


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.usefixtures("tokens_on")
def test_get_sessions_lists_the_tokens_account_only(client: Client) -> None:
    post(client, body(session="tv", deviceName="TV"), token=make_token("alice"))
    post(client, body(user="bob", session="bobs"), token=make_token("bob"))
    response = get_sessions(client, make_token("alice", plan="unknown-plan"))
    assert response.status_code == 200
    data = response.json()
    assert (data["limit"], data["limitSource"]) == (3, "default")
    assert [(s["sessionId"], s["deviceName"]) for s in data["sessions"]] == [("tv", "TV")]


@pytest.mark.usefixtures("tokens_on")
@pytest.mark.parametrize("device", ["", "x" * 65, "tab\there", 42, None])
def test_a_bad_device_name_is_400(client: Client, redis_client: Redis, key_prefix: str, device: object) -> None:
    response = post(client, body(deviceName=device), token=make_token("alice"))
    assert response.status_code == 400 and "deviceName" in response.json()["errors"]
    assert keys_under(redis_client, key_prefix) == []


@pytest.mark.usefixtures("tokens_on")
def test_a_device_name_of_64_odd_characters_is_kept(client: Client, manager) -> None:
    name = "Salon 名 {tv} " + "x" * 51
    assert len(name) == 64
    assert post(client, body(deviceName=name), token=make_token("alice")).status_code == 200
    assert reader_of(manager).sessions("alice")[0].device_name == name


# --- Stopping ------------------------------------------------------------------------


@pytest.mark.usefixtures("tokens_on")
def test_an_account_token_stops_another_screen_which_is_told_session_stopped(client: Client, settings) -> None:
    for i in range(3):
        post(client, body(session=f"s{i}"), token=make_token("alice", sid=f"s{i}"))
    assert post(client, body(session="s3"), token=make_token("alice", sid="s3")).status_code == 400
    # The viewer on s3 presses "stop playing on s0" (an account token, no sid).
    assert post(client, body(session="s0"), url=STOP_URL, token=make_token("alice")).status_code == 204
    assert post(client, body(session="s3"), token=make_token("alice", sid="s3")).status_code == 200
    refused = post(client, body(session="s0"), token=make_token("alice", sid="s0"))
    assert refused.status_code == 400 and refused.json()["code"] == "session_stopped"
    assert refused.json()["message"]
    # Still blocked when a slot is free: it cannot take a slot again for a session TTL.
    post(client, body(session="s1"), url=STOP_URL, token=make_token("alice", sid="s1"))
    assert post(client, body(session="s0"), token=make_token("alice", sid="s0")).json()["code"] == "session_stopped"


@pytest.mark.usefixtures("tokens_on")
def test_a_stopped_session_may_play_again_after_the_session_ttl(client: Client, settings) -> None:
    settings.SESSION_TTL_SECONDS = 1
    settings.HEARTBEAT_INTERVAL_SECONDS = 1
    settings.ACTIVITY_FLUSH_SECONDS = 0.25
    post(client, body(session="s0"), token=make_token("alice"))
    post(client, body(session="s0"), url=STOP_URL, token=make_token("alice"))
    assert post(client, body(session="s0"), token=make_token("alice")).json()["code"] == "session_stopped"
    time.sleep(1.2)
    assert post(client, body(session="s0"), token=make_token("alice")).status_code == 200


@pytest.mark.usefixtures("tokens_on")
def test_a_session_token_stops_its_own_session_without_blocking_it(client: Client) -> None:
    token = make_token("alice", sid="tv")
    post(client, body(session="tv"), token=token)
    assert post(client, body(session="tv"), url=STOP_URL, token=token).status_code == 204
    assert post(client, body(session="tv"), token=token).status_code == 200


@pytest.mark.usefixtures("tokens_on")
def test_an_account_token_cannot_stop_another_accounts_session(client: Client, manager) -> None:
    post(client, body(user="bob", session="tv"), token=make_token("bob"))
    response = post(client, body(user="bob", session="tv"), url=STOP_URL, token=make_token("alice"))
    assert response.status_code == 403
    assert [s.session_id for s in reader_of(manager).sessions("bob")] == ["tv"]


@pytest.mark.usefixtures("tokens_on")
def test_the_token_may_come_in_a_text_plain_beacon_body(client: Client, manager) -> None:
    token = make_token("alice", sid="tv")
    post(client, body(session="tv"), token=token)
    beacon = json.dumps({"sessionId": "tv", "token": token})
    response = post(client, beacon, url=STOP_URL, content_type="text/plain;charset=UTF-8")
    assert response.status_code == 204
    assert reader_of(manager).sessions("alice") == []


@pytest.mark.usefixtures("tokens_on")
def test_a_beacon_body_with_a_bad_token_is_401(client: Client, manager) -> None:
    post(client, body(session="tv"), token=make_token("alice"))
    for bad in ("garbage", 42, make_token("alice", expires_in=-120)):
        beacon = json.dumps({"sessionId": "tv", "token": bad})
        response = post(client, beacon, url=STOP_URL, content_type="text/plain")
        assert response.status_code == 401
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["tv"]


@pytest.mark.usefixtures("tokens_on")
def test_the_heartbeat_does_not_take_the_token_from_the_body(client: Client) -> None:
    response = post(client, body(token=make_token("alice")))
    assert response.status_code == 401 and response.json()["code"] == "token_required"


@pytest.mark.usefixtures("tokens_on")
def test_tokens_never_reach_the_logs(client: Client, json_log_lines) -> None:
    tokens = [make_token("alice", sid="tv"), make_token("alice", expires_in=-120), make_token("alice")]
    post(client, body(session="tv"), token=tokens[0])
    post(client, body(session="tv"), token=tokens[1])
    post(client, json.dumps({"sessionId": "tv", "token": tokens[0]}), url=STOP_URL, content_type="text/plain")
    # A broken beacon body is logged as sent (cut short), but not its token.
    post(client, '{"sessionId": "tv", "token": "' + tokens[2] + '"', url=STOP_URL, content_type="text/plain")
    post(client, json.dumps(tokens[2]), url=STOP_URL, content_type="text/plain")
    lines = json_log_lines()
    assert len([line for line in lines if line["message"] == "request_finished"]) == 5
    text = json.dumps(lines)
    for token in tokens:
        _header, payload, signature = token.split(".")
        assert signature not in text and payload not in text
    logged = [line["reqBody"] for line in lines if line["message"] == "request_finished"]
    assert logged[0] == {"userId": "alice", "streamId": "movie", "sessionId": "tv"}
    assert "[token removed]" in logged[3] and "[token removed]" in logged[4]


# --- issue 9: a stop of a session that is not live writes nothing shared ---------------


def test_a_stop_of_a_session_that_is_not_live_writes_nothing_in_redis(
    client: Client, redis_client: Redis, key_prefix: str, manager
) -> None:
    post(client, body(session="live"))
    FLUSHER.flush_all()  # the heartbeat's activity, written by the service's own manager

    def snapshot() -> dict:
        return {key: redis_client.dump(key) for key in keys_under(redis_client, key_prefix)}

    before = snapshot()
    for i in range(20):
        assert post(client, body(session=f"made-up-{i}"), url=STOP_URL).status_code == 204
        assert post(client, body(user=f"nobody-{i}", session="x"), url=STOP_URL).status_code == 204
    FLUSHER.flush_all()
    assert snapshot() == before
    assert not redis_client.exists(*(shard.ended_sessions for shard in manager.keys.shards))


# --- Tokens optional (PLAYBACK_TOKENS_REQUIRED=false: development, roll-outs) ----------


@pytest.fixture
def tokens_optional(token_keys, settings) -> None:
    settings.PLAYBACK_TOKENS_REQUIRED = False


@pytest.mark.usefixtures("tokens_optional")
def test_with_tokens_optional_a_request_without_one_is_served_as_with_tokens_off(client: Client) -> None:
    for i in range(3):
        assert post(client, body(session=f"s{i}")).status_code == 200
    refused = post(client, body(session="s3"))
    assert refused.status_code == 400 and "sessions" not in refused.json()
    assert post(client, body(session="s0"), url=STOP_URL).status_code == 204


@pytest.mark.usefixtures("tokens_optional")
def test_with_tokens_optional_a_token_sent_is_still_verified_and_shows_the_screens(client: Client) -> None:
    assert post(client, body(session="s0"), token="not-a-token").status_code == 401
    assert post(client, body(session="s0"), token=make_token("bob")).status_code == 403  # not alice's
    for i in range(3):
        post(client, body(session=f"s{i}"))
    refused = post(client, body(session="s3"), token=make_token("alice"))
    assert refused.status_code == 400 and len(refused.json()["sessions"]) == 3
    assert get_sessions(client, None).status_code == 401
    assert get_sessions(client, make_token("alice")).json()["limit"] == 3


def test_tokens_optional_is_a_deploy_warning(settings, token_keys) -> None:
    from heartbeat.checks import playback_tokens_configured

    assert playback_tokens_configured() == []
    settings.PLAYBACK_TOKENS_REQUIRED = False
    [warning] = playback_tokens_configured()
    assert warning.id == "streamlimit.W002"


def test_the_development_key_is_made_once_and_kept_private(tmp_path) -> None:
    import stat

    from devtools.dev_token_key import dev_token_key
    from heartbeat.limiter.tokens import parse_hs256_keys

    first = dev_token_key(tmp_path)
    assert dev_token_key(tmp_path) == first
    assert list(parse_hs256_keys(first)) == ["demo"]
    assert stat.S_IMODE((tmp_path / "dev_token_key").stat().st_mode) == 0o600


# --- What each failure counts, and fail-open with tokens ------------------------------------


@pytest.mark.usefixtures("tokens_on")
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: make_token("alice", expires_in=-120), "expired"),
        (lambda: make_token("alice", kid="unknown", secret=TOKEN_SECRETS["k1"]), "unknown_kid"),
        (lambda: make_token("alice", kid="k1", secret=TOKEN_SECRETS["k2"]), "signature"),
        (lambda: "garbage", "malformed"),
        (lambda: make_token("alice", maxStreams=0), "claims"),
    ],
    ids=["expired", "unknown kid", "wrong key", "garbage", "bad claim"],
)
def test_each_token_failure_is_counted_under_its_own_reason(client: Client, make, reason: str) -> None:
    reasons = ("missing", "malformed", "unknown_kid", "algorithm", "signature", "expired", "claims", "mismatch")
    before = {r: counter("streamlimit_token_failures_total", reason=r) for r in reasons}
    # Made now, not when the tests were collected: a token made then may have expired since.
    assert post(client, body(), token=make()).status_code == 401
    after = {r: counter("streamlimit_token_failures_total", reason=r) for r in reasons}
    assert {r: after[r] - before[r] for r in reasons} == {r: float(r == reason) for r in reasons}


@pytest.fixture
def redis_down(settings) -> None:
    """Point the service at a closed port (nothing listens on port 1)."""
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches


@pytest.mark.usefixtures("tokens_on", "redis_down")
def test_fail_open_answers_with_the_limit_the_token_asks_for(client: Client, settings) -> None:
    settings.STREAMLIMIT_FAIL_OPEN = True
    settings.PLAN_LIMITS = {"premium": 4}
    answers = [
        post(client, body(), token=make_token("alice", maxStreams=5)),
        post(client, body(), token=make_token("alice", plan="premium")),
        post(client, body(), token=make_token("alice", plan="premium", maxStreams=2)),
        post(client, body(), token=make_token("alice")),
    ]
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["degraded"] is True and a.json()["activeSessions"] is None for a in answers)
    assert [(a.json()["limit"], a.json()["limitSource"]) for a in answers] == [
        (5, "token"),
        (4, "plan"),
        (2, "token"),
        (3, "default"),
    ]
