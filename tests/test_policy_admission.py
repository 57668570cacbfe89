"""The policy document's rules as viewers meet them: decided in the one admission script, exact under races."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from redis import Redis
from redis.exceptions import RedisError

from devtools.with_redis import free_port
from heartbeat.limiter.decisions import SessionInputs
from heartbeat.limiter.manager import HeartbeatResult, StreamManager
from heartbeat.limiter.outcomes import Outcome
from heartbeat.limiter.policy_store import PolicyStore, PolicyWatcher
from heartbeat.limiter.reads import LiveStateReader
from heartbeat.services import get_policy_store
from tests.conftest import make_token
from tests.policies import DEVICE_LABELS, issue_example

FAMILY_POLICY = issue_example(
    plans={"flagged": {"maxStreams": 4, "maxNetworks": 1, "networkRule": "flag"}}, deviceLabels=DEVICE_LABELS
)
HOME = "192.0.2.0/24"


@pytest.fixture
def family(make_manager: Callable[..., StreamManager]) -> StreamManager:
    """A StreamManager under FAMILY_POLICY, which it reads on its next heartbeat."""
    manager = make_manager()
    manager.policy_store.apply(FAMILY_POLICY, applied_by="test")
    return manager


def play(
    manager: StreamManager, session: str, stream: str = "movie", *, network: str = HOME, plan: str = "family", **inputs
) -> HeartbeatResult:
    return manager.admit("acct", stream, session, plan=plan, network=network, inputs=SessionInputs(**inputs))


def race(count: int, heartbeat: Callable[[int], HeartbeatResult]) -> list[HeartbeatResult]:
    """``count`` first heartbeats released at once; their results."""
    barrier = threading.Barrier(count, timeout=60)
    results: list[HeartbeatResult] = []

    def player(i: int) -> None:
        barrier.wait()
        results.append(heartbeat(i))

    threads = [threading.Thread(target=player, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def admitted(results: list[HeartbeatResult]) -> list[HeartbeatResult]:
    return [r for r in results if r.allowed]


# --- Each rule under 60 racing first heartbeats, on one Redis and on a Cluster -----------------------------

ON_EACH_TOPOLOGY = pytest.mark.parametrize("topology", ["standalone", "cluster"], indirect=True)


@ON_EACH_TOPOLOGY
def test_racing_sessions_with_weights_never_take_more_slots_than_max_streams(family: StreamManager) -> None:
    quality = ["uhd", "sd"]
    results = race(60, lambda i: play(family, f"s{i}", quality=quality[i % 2], device_id=f"d{i}"))
    allowed = admitted(results)
    weights = {f"s{i}": 2 if i % 2 == 0 else 1 for i in range(60)}
    sessions = [s.session_id for s in family_sessions(family)]
    assert sum(weights[s] for s in sessions) == 4
    assert len(allowed) == len(sessions)
    refused = [r for r in results if not r.allowed]
    assert {r.rule.name for r in refused if r.rule} == {"maxStreams"}
    assert all(r.outcome is Outcome.LIMIT_REACHED for r in refused)


@ON_EACH_TOPOLOGY
def test_racing_phones_never_pass_the_device_cap(family: StreamManager) -> None:
    results = race(60, lambda i: play(family, f"s{i}", device_class="mobile", device_id=f"phone{i}"))
    assert len(admitted(results)) == 2
    assert {r.rule.name for r in results if not r.allowed} == {"devices.mobile"}


@ON_EACH_TOPOLOGY
def test_racing_live_streams_never_pass_the_pool_cap(family: StreamManager) -> None:
    results = race(60, lambda i: play(family, f"s{i}", f"live-{i}", device_class="tv", device_id=f"tv{i}"))
    assert len(admitted(results)) == 1
    assert {r.rule.name for r in results if not r.allowed} == {"pools.live"}


@ON_EACH_TOPOLOGY
def test_racing_sessions_from_many_networks_never_pass_max_networks(family: StreamManager) -> None:
    results = race(60, lambda i: play(family, f"s{i}", network=f"10.{i}.0.0/24", device_id=f"d{i}"))
    assert len(admitted(results)) == 2
    assert {r.rule.name for r in results if not r.allowed} == {"networks"}


def family_sessions(manager: StreamManager) -> list:
    return LiveStateReader(manager.client, manager.keys, default_limit=3, session_ttl_seconds=40).sessions("acct")


# --- Each rule as a viewer meets it ---------------------------------------------------------------------------


def test_a_third_phone_is_refused_by_the_device_rule_with_its_numbers_and_words(family: StreamManager) -> None:
    play(family, "p1", device_class="mobile", device_id="phone1")
    play(family, "p2", device_class="mobile", device_id="phone2")
    refused = play(family, "p3", device_class="mobile", device_id="phone3")
    assert refused.outcome is Outcome.LIMIT_REACHED
    assert refused.rule.as_json() == {"name": "devices.mobile", "limit": 2, "active": 2}
    assert refused.message.startswith("This account is already playing on 2 phones, the most its plan allows.")
    assert len(refused.decision_id) == 16
    # A TV still has room: the phones' cap is theirs alone.
    assert play(family, "t1", device_class="tv", device_id="tv1").allowed


def test_an_uhd_session_takes_two_slots(family: StreamManager) -> None:
    assert play(family, "a", quality="uhd", device_id="a").allowed
    assert play(family, "b", quality="uhd", device_id="b").active_sessions == 2  # sessions, not slots
    refused = play(family, "c", quality="sd", device_id="c")
    assert refused.rule.as_json() == {"name": "maxStreams", "limit": 4, "active": 4}
    assert refused.active_sessions == 2


def test_free_content_counts_against_nothing_but_still_plays_and_shows(family: StreamManager) -> None:
    for n in range(4):
        assert play(family, f"s{n}", device_id=f"d{n}").allowed
    trailer = play(family, "trailer", "trailer-42", device_id="d9")
    assert trailer.allowed and trailer.active_sessions == 5
    assert play(family, "s4", device_id="d4").rule.as_json() == {"name": "maxStreams", "limit": 4, "active": 4}
    assert "trailer" in {s.session_id for s in family_sessions(family)}
    assert family.stop("acct", "trailer")


def test_a_restarted_player_takes_its_own_sessions_place_and_the_old_one_is_told_replaced(
    family: StreamManager,
) -> None:
    for n in range(4):
        play(family, f"s{n}", device_id=f"d{n}")
    restarted = play(family, "s0-again", device_id="d0")
    assert restarted.allowed and restarted.ended == (("s0", "replaced"),)
    assert play(family, "s0", device_id="d0").outcome is Outcome.REPLACED


def test_without_takeover_a_restarted_player_waits_for_its_ghost_to_expire(make_manager) -> None:
    manager = make_manager()
    manager.policy_store.apply({**FAMILY_POLICY, "sameDeviceTakeover": False}, applied_by="test")
    for n in range(4):
        play(manager, f"s{n}", device_id=f"d{n}")
    assert play(manager, "s0-again", device_id="d0").outcome is Outcome.LIMIT_REACHED


def test_a_hand_off_moves_playback_even_when_the_account_is_full(family: StreamManager) -> None:
    for n in range(4):
        play(family, f"s{n}", device_id=f"d{n}")
    moved = family.admit(
        "acct",
        "movie",
        "tv",
        plan="family",
        network=HOME,
        device_name="Living room TV",
        inputs=SessionInputs(device_id="tv", replaces="s2", replace_proof="network"),
    )
    assert moved.allowed and moved.ended == (("s2", "handed_off"),)
    told = play(family, "s2", device_id="d2")
    assert told.outcome is Outcome.HANDED_OFF and told.handed_off_to == "Living room TV"


def test_a_hand_off_from_another_network_without_a_token_ends_nothing(family: StreamManager) -> None:
    play(family, "s0", device_id="d0")
    refused = play(family, "x", network="198.51.100.0/24", replaces="s0", replace_proof="network")
    assert refused.outcome is Outcome.REPLACE_REFUSED
    assert play(family, "s0", device_id="d0").allowed


def test_a_hand_off_with_a_session_token_of_another_device_ends_nothing(family: StreamManager) -> None:
    play(family, "s0", device_id="d0")
    refused = play(family, "x", device_id="d1", replaces="s0", replace_proof="device:d1")
    assert refused.outcome is Outcome.REPLACE_REFUSED
    assert play(family, "s0", device_id="d0").allowed


def test_one_network_more_is_admitted_and_flagged_under_the_flag_rule(family: StreamManager) -> None:
    assert play(family, "a", plan="flagged", network="10.0.0.0/24").allowed
    flagged = play(family, "b", plan="flagged", network="10.1.0.0/24")
    assert flagged.allowed and flagged.network_flagged
    assert not play(family, "c", plan="flagged", network="10.0.0.0/24").network_flagged


def test_the_token_limit_wins_over_the_plan_and_the_staff_override_over_both(family: StreamManager) -> None:
    assert family.admit("acct", "m", "a", plan="basic", max_streams=2, network=HOME).limit == 2
    family.set_limit_override("acct", 5)
    result = family.admit("acct", "m", "b", plan="basic", max_streams=2, network=HOME)
    assert (result.limit, result.limit_source) == (5, "override")


def test_a_plan_without_a_rule_inherits_defaults(make_manager) -> None:
    manager = make_manager()
    manager.policy_store.apply(
        {"default": {"maxStreams": 2, "devices": {"tv": 1}}, "plans": {"solo": {"maxStreams": 3}}}, applied_by="t"
    )
    assert play(manager, "a", plan="solo", device_class="tv").allowed
    assert play(manager, "b", plan="solo", device_class="tv").rule.name == "devices.tv"


def test_a_flood_of_new_device_ids_leaves_nothing_past_the_session(family: StreamManager) -> None:
    for n in range(4):
        play(family, f"s{n}", device_id=f"d{n}")
    keys_before = set(family.client.scan_iter(match=f"{family.keys.prefix}:u:*"))
    details = family.keys.user("acct").details
    fields_before = family.client.hlen(details)
    for n in range(200):
        assert not play(family, f"flood{n}", device_id=f"fake{n}").allowed
    assert set(family.client.scan_iter(match=f"{family.keys.prefix}:u:*")) == keys_before
    assert family.client.hlen(details) == fields_before
    assert 0 < family.client.pttl(details) <= 40_000


# --- Through the API ------------------------------------------------------------------------------------------


def heartbeat(client: Client, session: str, **fields: Any):
    body = {"userId": "acct", "streamId": "movie", "sessionId": session, **fields}
    return client.post("/heartbeat", body, content_type="application/json")


@pytest.fixture
def policy_in_force() -> None:
    get_policy_store().apply({**FAMILY_POLICY, "default": FAMILY_POLICY["plans"]["family"]}, applied_by="test")


def test_a_refusal_by_a_rule_keeps_its_code_and_adds_the_rule_and_a_decision_id_found_in_the_log(
    client: Client, policy_in_force: None, json_log_lines
) -> None:
    for n in range(2):
        assert heartbeat(client, f"p{n}", deviceClass="mobile", deviceId=f"phone{n}").status_code == 200
    response = heartbeat(client, "p3", deviceClass="mobile", deviceId="phone3")
    body = response.json()
    assert response.status_code == 400 and body["code"] == "concurrency_limit_reached"
    assert body["rule"] == {"name": "devices.mobile", "limit": 2, "active": 2}
    assert "2 phones" in body["message"]
    logged = [line for line in json_log_lines() if line.get("decisionId") == body["decisionId"]]
    assert logged and all(line["rule"] == "devices.mobile" for line in logged)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deviceClass", "Phone"),
        ("deviceClass", "x" * 33),
        ("deviceClass", 7),
        ("deviceId", ""),
        ("deviceId", "a" * 129),
        ("deviceId", "evil\u202etxt"),
        ("quality", "4k"),
        ("replaces", ""),
        ("replaces", ["s1"]),
    ],
)
def test_a_bad_input_gets_a_400_naming_it_and_stores_nothing(
    client: Client, policy_in_force: None, field: str, value: Any, redis_client, key_prefix: str
) -> None:
    response = heartbeat(client, "s1", **{field: value})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {field}
    assert not list(redis_client.scan_iter(match=f"{key_prefix}:u:*"))


def test_a_hand_off_naming_another_accounts_session_gets_403_and_ends_nothing(
    client: Client, policy_in_force: None, make_manager
) -> None:
    other = make_manager()
    other.admit("other", "movie", "theirs", network="127.0.0.0/24")
    response = heartbeat(client, "mine", replaces="theirs")
    assert response.status_code == 403 and response.json()["code"] == "replace_not_allowed"
    assert other.admit("other", "movie", "theirs", network="127.0.0.0/24").allowed


def test_with_no_policy_the_inputs_change_no_answer(client: Client) -> None:
    plain = heartbeat(client, "s1").json()
    with_inputs = heartbeat(client, "s2", deviceClass="tv", deviceId="tv1", quality="uhd").json()
    assert plain.keys() == with_inputs.keys()
    assert with_inputs["activeSessions"] == 2 and with_inputs["limitSource"] == "default"


# --- With playback tokens: the back end's claims win -----------------------------------------------------------


def with_token(client: Client, token: str, session: str, **fields: Any):
    body = {"streamId": "movie", "sessionId": session, **fields}
    return client.post(
        "/heartbeat", body, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )


@pytest.mark.usefixtures("token_keys", "policy_in_force")
def test_a_body_that_contradicts_the_tokens_device_class_gets_403_and_stores_nothing(
    client: Client, redis_client, key_prefix: str
) -> None:
    phone = make_token("acct", sid="p1", deviceClass="mobile", deviceId="phone1")
    response = with_token(client, phone, "p1", deviceClass="tv")
    assert response.status_code == 403 and response.json()["code"] == "token_mismatch"
    assert not list(redis_client.scan_iter(match=f"{key_prefix}:u:*"))


@pytest.mark.usefixtures("token_keys", "policy_in_force")
def test_the_claims_decide_when_the_body_says_nothing(client: Client) -> None:
    for n in range(2):
        token = make_token("acct", sid=f"p{n}", deviceClass="mobile", deviceId=f"phone{n}")
        assert with_token(client, token, f"p{n}").status_code == 200
    third = make_token("acct", sid="p9", deviceClass="mobile", deviceId="phone9")
    assert with_token(client, third, "p9").json()["rule"]["name"] == "devices.mobile"


@pytest.mark.usefixtures("token_keys", "policy_in_force")
def test_a_token_pool_claim_wins_over_the_streams_patterns(client: Client) -> None:
    live = make_token("acct", sid="a", pool="live")
    assert with_token(client, live, "a").status_code == 200
    second = make_token("acct", sid="b", pool="live")
    assert with_token(client, second, "b").json()["rule"]["name"] == "pools.live"


@pytest.mark.usefixtures("token_keys", "policy_in_force")
def test_a_hand_off_needs_an_account_token_or_a_session_token_of_the_same_device(client: Client) -> None:
    tv = make_token("acct", sid="tv", deviceId="tv1")
    assert with_token(client, tv, "tv").status_code == 200
    # A session token of another device may not end the TV's session.
    phone = make_token("acct", sid="phone", deviceId="phone1")
    response = with_token(client, phone, "phone", replaces="tv")
    assert response.status_code == 403 and response.json()["code"] == "replace_not_allowed"
    # A session token without deviceId proves no device at all.
    bare = make_token("acct", sid="bare")
    assert with_token(client, bare, "bare", replaces="tv").json()["code"] == "token_mismatch"
    # The same device (a restarted app with a new session token) may.
    same = make_token("acct", sid="tv-2", deviceId="tv1")
    assert with_token(client, same, "tv-2", replaces="tv").status_code == 200
    # And an account token may hand off any session of its account.
    account = make_token("acct")
    assert with_token(client, account, "phone-3", replaces="tv-2").status_code == 200
    assert with_token(client, same, "tv-2").json()["code"] == "session_handed_off"


@pytest.mark.usefixtures("token_keys")
@pytest.mark.parametrize(
    ("claim", "value"), [("deviceClass", "TV"), ("deviceId", ""), ("quality", "8k"), ("pool", "x y"), ("pool", 3)]
)
def test_a_token_with_a_bad_policy_claim_is_an_invalid_token(client: Client, claim: str, value: Any) -> None:
    response = with_token(client, make_token("acct", **{claim: value}), "s1")
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"
    assert claim in response.json()["message"]


@pytest.mark.usefixtures("token_keys", "policy_in_force")
def test_issue_token_sets_the_policy_claims(client: Client) -> None:
    token = call_command_output(
        "issue_token", "acct", "--session", "p1", "--device-class", "mobile", "--device-id", "ph"
    )
    assert with_token(client, token, "p1", deviceClass="tv").json()["code"] == "token_mismatch"
    assert with_token(client, token, "p1").status_code == 200
    with pytest.raises(CommandError, match="--device-class"):
        call_command_output("issue_token", "acct", "--device-class", "Phone")


def call_command_output(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_a_live_session_naming_another_accounts_session_is_told_no_and_ends_nothing(
    client: Client, policy_in_force: None, make_manager
) -> None:
    other = make_manager()
    other.admit("other", "movie", "theirs", network="127.0.0.0/24")
    assert heartbeat(client, "mine").status_code == 200
    response = heartbeat(client, "mine", replaces="theirs")
    assert response.status_code == 403 and response.json()["code"] == "replace_not_allowed"
    assert other.admit("other", "movie", "theirs", network="127.0.0.0/24").allowed


# --- What a review found: no change of stream or quality, no crowd of sessions, no unproven takeover ---------


def test_a_session_that_switches_from_free_content_to_a_counted_stream_is_decided_again(family: StreamManager) -> None:
    for n in range(8):
        assert play(family, f"s{n}", "trailer-1", device_id=f"d{n}").allowed  # uncounted: all play
    switched = [play(family, f"s{n}", f"movie-{n}", device_id=f"d{n}") for n in range(8)]
    assert [r.allowed for r in switched].count(True) == 4  # the plan's 4 slots, no more
    assert {r.rule.name for r in switched if not r.allowed} == {"maxStreams"}


def test_a_session_that_switches_to_a_capped_pool_or_a_heavier_quality_is_decided_again(family: StreamManager) -> None:
    assert play(family, "a", "movie-1", device_id="a").allowed
    assert play(family, "b", "movie-2", device_id="b").allowed
    assert play(family, "a", "live-1", device_id="a").allowed  # the one live slot
    assert play(family, "b", "live-2", device_id="b").rule.name == "pools.live"
    assert play(family, "c", quality="uhd", device_id="c").allowed  # 1 + 1 + 2 = 4 slots
    assert play(family, "b", "movie-2", quality="uhd", device_id="b").rule.name == "maxStreams"
    assert play(family, "b", "movie-2", device_id="b").allowed  # as it started: plays on


def test_an_account_holds_at_most_a_hundred_sessions_uncounted_ones_included(make_manager) -> None:
    manager = make_manager()
    manager.policy_store.apply(
        {"default": {"maxStreams": 3}, "streams": {"free": ["free-*"]}, "uncountedPools": ["free"]}, applied_by="t"
    )
    for n in range(100):
        assert play(manager, f"s{n}", "free-1").allowed
    refused = play(manager, "s100", "free-1")
    assert refused.rule.as_json() == {"name": "sessions", "limit": 100, "active": 100}


def test_without_a_token_a_device_id_takes_over_only_a_session_on_the_same_network(family: StreamManager) -> None:
    play(family, "victim", device_id="tv1", takeover_proof="network")
    stranger = play(family, "x", network="203.0.113.0/24", device_id="tv1", takeover_proof="network")
    assert stranger.allowed and stranger.ended == ()
    assert play(family, "victim", device_id="tv1").allowed
    restarted = play(family, "victim-2", device_id="tv1", takeover_proof="network")
    assert restarted.ended == (("victim", "replaced"),)


def test_a_session_token_without_a_device_id_takes_no_other_sessions_place(
    client: Client, policy_in_force: None, token_keys
) -> None:
    tv = make_token("acct", sid="tv", deviceId="tv1")
    assert with_token(client, tv, "tv").status_code == 200
    bare = make_token("acct", sid="bare")
    assert with_token(client, bare, "bare", deviceId="tv1").status_code == 200
    assert with_token(client, tv, "tv").status_code == 200  # still playing


def test_a_session_that_moves_keeps_the_network_it_started_from(family: StreamManager) -> None:
    play(family, "a", device_id="a", network="10.0.0.0/24")
    play(family, "b", device_id="b", network="10.0.0.0/24")
    assert play(family, "a", device_id="a", network="10.1.0.0/24").allowed  # moved: plays on
    assert play(family, "c", device_id="c", network="10.2.0.0/24").allowed  # the second network
    refused = play(family, "d", device_id="d", network="10.3.0.0/24")
    assert refused.rule.as_json() == {"name": "networks", "limit": 2, "active": 2}


def test_nothing_of_an_ended_session_stays_in_the_account_hash(family: StreamManager) -> None:
    details = family.keys.user("acct").details
    play(family, "a", device_id="a")
    family.stop("acct", "a")
    play(family, "b", device_id="b")
    family.evict("acct", "b")
    fields = {f.decode() for f in family.client.hkeys(details)}
    assert not {f for f in fields if f.endswith((":a", ":b"))}


def test_takeover_marks_and_hand_off_names_are_pruned_once_their_block_is_over(make_manager) -> None:
    manager = make_manager(session_ttl_seconds=1)
    manager.policy_store.apply(FAMILY_POLICY, applied_by="test")
    play(manager, "s0", device_id="tv")
    play(manager, "h0", device_id="phone", replaces="s0")
    for n in range(1, 30):
        play(manager, f"s{n}", device_id="tv")
    time.sleep(1.2)
    play(manager, "last", device_id="tv")
    user = manager.keys.user("acct")
    assert manager.client.zcard(user.replaced) <= 1
    assert not [f for f in manager.client.hkeys(user.details) if f.startswith(b"h:")]


def test_a_new_process_that_cannot_read_the_policy_version_decides_nothing(make_manager) -> None:
    manager = make_manager()
    unreachable = PolicyStore(Redis(port=free_port(), socket_connect_timeout=0.5), manager.keys)
    watcher = PolicyWatcher(unreachable, manager.policies.fallback)
    with pytest.raises(RedisError):
        watcher.policy()
    with pytest.raises(RedisError):
        watcher.policy()  # and asks again on the next heartbeat
