"""The policy simulator: exact counts on a known history, and the same decisions as admit.lua."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from heartbeat.limiter.decisions import SessionInputs
from heartbeat.limiter.events import Event, EventType
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.outcomes import Outcome
from heartbeat.limiter.policy import parse_policy
from heartbeat.limiter.simulation import LiveSession, decide, simulate
from heartbeat.services import get_stream_manager

RECORDED_POLICY = {
    "default": {"maxStreams": 3},
    "plans": {"basic": {"maxStreams": 2}, "family": {"maxStreams": 4, "devices": {"mobile": 2}}},
    "sameDeviceTakeover": True,
}
PROPOSED = parse_policy(
    {"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 1}, "family": {"maxStreams": 3}}}
)


class History:
    """A traffic history written event by event, one second apart."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.clock = 1_796_000_000_000

    def _add(self, kind: EventType, data: dict[str, Any]) -> None:
        self.clock += 1000
        self.events.append(Event(kind, self.clock, data))

    def started(self, user: str, sid: str, plan: str, **inputs: Any) -> None:
        self._add(
            EventType.SESSION_STARTED, {"userId": user, "sessionId": sid, "plan": plan, "streamId": "m", **inputs}
        )

    def refused(self, user: str, sid: str, plan: str, code: str = "concurrency_limit_reached", **inputs: Any) -> None:
        data = {"userId": user, "sessionId": sid, "plan": plan, "streamId": "m", "code": code, **inputs}
        self._add(EventType.SESSION_REFUSED, data)

    def ended(self, user: str, sid: str, reason: str = "stopped") -> None:
        self._add(EventType.SESSION_ENDED, {"userId": user, "sessionId": sid, "reason": reason})


def test_a_known_history_gives_exact_counts_under_basic_1_family_3() -> None:
    h = History()
    # A family account plays on 4 screens, a fifth is refused; one stops; a sixth plays.
    for n in range(4):
        h.started("fam", f"f{n}", "family")
    h.refused("fam", "f4", "family", rule="maxStreams")
    h.ended("fam", "f0")
    h.started("fam", "f5", "family")
    # A basic account plays on 2 screens.
    h.started("bas", "b0", "basic")
    h.started("bas", "b1", "basic")
    # A refusal that no policy decides (support blocked the account) stays as it was.
    h.refused("bas", "b2", "basic", code="account_blocked")
    # Another basic account's only screen is unaffected.
    h.started("solo", "s0", "basic")
    h.ended("solo", "s0", "expired")

    report = simulate(h.events, PROPOSED)

    # Under family = 3: f3 is refused (3 live), f4 too; f0 ends, so f5 plays.
    # Under basic = 1: b1 is refused.
    assert report.newly_refused == {"maxStreams": 2}  # f3 and b1 played, would not
    assert report.refused_by_rule == {"maxStreams": 3}  # f3, f4, b1
    assert report.newly_admitted == 0
    assert report.attempts == 9  # 8 started + 1 refused for a limit
    assert report.top_accounts() == [("bas", 1), ("fam", 1)]
    # Peaks are plan-wide: b0 and s0 play at once (b1 and s0 too, in reality).
    assert report.peak_by_plan == {"basic": 2, "family": 3}
    assert report.recorded_peak_by_plan == {"basic": 3, "family": 4}


def test_a_looser_policy_lets_the_refused_play_and_counts_them() -> None:
    h = History()
    for n in range(2):
        h.started("bas", f"b{n}", "basic")
    h.refused("bas", "b2", "basic")
    h.refused("bas", "b3", "basic")
    report = simulate(h.events, parse_policy({"default": {"maxStreams": 3}}))
    assert report.newly_admitted == 1  # b2 plays; b3 is still one too many
    assert report.refused_by_rule == {"maxStreams": 1}
    assert report.newly_refused == {}
    assert report.peak_by_plan == {"basic": 3}


def test_device_caps_pools_and_takeover_are_simulated() -> None:
    proposal = parse_policy(
        {
            "default": {"maxStreams": 5, "devices": {"mobile": 1}, "pools": {"live": 1}},
            "streams": {"live": ["live-*"]},
            "sameDeviceTakeover": True,
        }
    )
    h = History()
    h.started("a", "p1", "x", deviceClass="mobile", deviceId="phone1")
    h.started("a", "p2", "x", deviceClass="mobile", deviceId="phone2")  # refused: devices.mobile
    h.started("a", "p1b", "x", deviceClass="mobile", deviceId="phone1")  # takes p1's place
    h.started("a", "l1", "x", streamId="live-1")
    h.started("a", "l2", "x", streamId="live-2")  # refused: pools.live
    report = simulate(h.events, proposal)
    assert report.newly_refused == {"devices.mobile": 1, "pools.live": 1}
    assert report.peak_by_plan == {"x": 2}


def test_an_empty_window_is_empty() -> None:
    assert simulate([], PROPOSED).empty


# --- The simulator decides as admit.lua does ------------------------------------------------------------------

CROSS_POLICY = {
    "default": {"maxStreams": 4, "devices": {"mobile": 2, "tv": 2}, "pools": {"live": 1}, "weights": {"uhd": 2}},
    "plans": {"net": {"maxStreams": 4, "maxNetworks": 2}},
    "streams": {"live": ["live-*"], "free": ["free-*"]},
    "uncountedPools": ["free"],
    "sameDeviceTakeover": True,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_simulators_decisions_are_admit_luas_on_random_traffic(make_manager, seed: int) -> None:
    manager: StreamManager = make_manager()
    manager.policy_store.apply(CROSS_POLICY, applied_by="test")
    policy = parse_policy(CROSS_POLICY)
    rng = random.Random(seed)
    live: dict[str, dict[str, LiveSession]] = {"acct": {}}
    for step in range(300):
        plan = rng.choice(["default", "net"])
        user = f"acct-{plan}"
        sessions = live.setdefault(user, {})
        if sessions and rng.random() < 0.3:
            sid = rng.choice(sorted(sessions))
            assert manager.stop(user, sid)
            del sessions[sid]
            continue
        sid = f"s{step}"
        stream = rng.choice(["movie", "live-1", "free-1"])
        device_class = rng.choice(["mobile", "tv", ""])
        device_id = rng.choice(["", "d1", "d2", "d3", "d4", "d5"])
        quality = rng.choice(["", "sd", "uhd"])
        network = rng.choice(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"])
        result = manager.admit(
            user,
            stream,
            sid,
            plan=None if plan == "default" else plan,
            network=network,
            inputs=SessionInputs(device_class, device_id, quality),
        )
        rules, _ = policy.rules_for(None if plan == "default" else plan)
        pool = policy.pool_of(stream)
        new = LiveSession(sid, device_class, device_id, pool, rules.weight_of(quality), policy.counts(pool), network)
        rule, ending = decide(rules, rules.max_streams, list(sessions.values()), new, takeover=True)
        assert (result.rule.as_json() if result.rule else None) == (rule.as_json() if rule else None), step
        assert result.outcome is (Outcome.LIMIT_REACHED if rule else Outcome.ALLOWED), step
        assert sorted(sid for sid, _ in result.ended) == sorted(ending), step
        for ended in ending:
            del sessions[ended]
        if rule is None:
            sessions[sid] = new


# --- manage.py simulate_policy, over events recorded by the real service --------------------------------------


def simulate_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("simulate_policy", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def proposal_file(tmp_path: Path) -> Path:
    path = tmp_path / "proposal.json"
    path.write_text(
        json.dumps({"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 1}, "family": {"maxStreams": 3}}})
    )
    return path


def test_simulate_policy_replays_what_the_service_recorded(proposal_file: Path) -> None:
    manager = get_stream_manager()
    manager.policy_store.apply(RECORDED_POLICY, applied_by="test")
    for n in range(4):
        assert manager.admit("fam", "m", f"f{n}", plan="family", network="10.0.0.0/24").allowed
    assert not manager.admit("fam", "m", "f4", plan="family", network="10.0.0.0/24").allowed
    for n in range(2):
        assert manager.admit("bas", "m", f"b{n}", plan="basic", network="10.0.0.0/24").allowed
    manager.flush_activity()
    out, _ = simulate_command(str(proposal_file), "--since", "1h", "--json")
    report = json.loads(out)
    assert report["wouldBeRefused"] == {"total": 2, "byRule": {"maxStreams": 2}}
    assert report["refusedByRule"] == {"maxStreams": 3}
    assert report["accountsAffected"] == 2
    assert report["peakConcurrencyByPlan"] == {"basic": 1, "family": 3}
    text, _ = simulate_command(str(proposal_file), "--since", "1h")
    assert "sessions that played and would have been refused: 2" in text and "assumptions:" in text
    assert "  fam: 1 decision changed" in text  # one decision, not "1 decision(s)"


def test_simulate_policy_over_an_empty_window_says_so(proposal_file: Path) -> None:
    out, err = simulate_command(str(proposal_file), "--since", "1h")
    assert out == "" and "no session events between" in err


def test_a_proposal_that_does_not_validate_is_refused_before_any_replay(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"default": {"maxStreams": 0}, "plans": {"x": {"devices": {"TV": 1}}}}))
    with pytest.raises(CommandError) as raised:
        simulate_command(str(bad), "--since", "1h")
    assert "$.default.maxStreams" in str(raised.value) and "$.plans.x.devices" in str(raised.value)
    with pytest.raises(CommandError, match="No such file"):
        simulate_command(str(tmp_path / "missing.json"))


def test_a_bad_window_is_a_command_error(proposal_file: Path) -> None:
    with pytest.raises(CommandError, match="--since"):
        simulate_command(str(proposal_file), "--since", "yesterday")
