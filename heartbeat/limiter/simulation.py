"""The policy simulator: what a proposed policy would have done to recorded traffic.

It replays the ``session.started``, ``session.refused`` and ``session.ended``
events of a window, in order, against a proposed policy, and counts where
the proposal decides otherwise than what happened. The decision is
``decide`` below, the same rules as admit.lua's policy path (a test holds the
two to the same answers on random traffic).

Assumptions, stated in every report:

- a viewer refused under the proposal does not retry (their session never
  plays, and its later events are ignored);
- a session refused in reality that the proposal admits holds its slot to
  the end of the window (nothing recorded when it would have ended);
- the limit a token or a staff override set (``limitSource`` token or
  override) stays as recorded; plans take the proposal's rules;
- refusals that were not for a limit (blocked, evicted, too many new
  sessions) are not the policy's to decide and are left as they were.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from heartbeat.limiter.decisions import RuleHit
from heartbeat.limiter.events import Event, EventType, timestamp_of
from heartbeat.limiter.policy import PlanRules, Policy

ASSUMPTIONS = (
    "A viewer refused under the proposed policy does not retry.",
    "A session refused in reality that the proposal admits holds its slot until the end of the window "
    "(nothing recorded its end).",
    "Limits set by a token or a staff override stay as recorded; plans take the proposal's rules.",
    "Refusals that were not for a limit (blocked, evicted, too many new sessions) are left as they were.",
    "LIMIT_POLICY=reject_new: the proposal never replaces the oldest session to make room.",
)
LIMIT_CODE = "concurrency_limit_reached"
TOP_ACCOUNTS = 20


@dataclass(frozen=True)
class LiveSession:
    """A session the simulation holds live, with the inputs a policy decides by."""

    session_id: str
    device_class: str = ""
    device_id: str = ""
    pool: str = ""
    weight: int = 1
    counted: bool = True
    network: str = ""


def decide(
    rules: PlanRules,
    limit: int,
    live: Iterable[LiveSession],
    new: LiveSession,
    *,
    takeover: bool,
) -> tuple[RuleHit | None, list[str]]:
    """admit.lua's policy decision for a new session: (the rule that refuses it or None, sessions it ends).

    ``limit`` is maxStreams as the script gets it (the plan's, a token's or an override).
    """
    ending = [s.session_id for s in live if takeover and new.device_id and s.device_id == new.device_id]
    counted = [s for s in live if s.counted and s.session_id not in ending]
    if not new.counted:
        return None, ending
    slots = sum(s.weight for s in counted)
    if slots + new.weight > limit:
        return RuleHit("maxStreams", limit, slots), []
    cap = rules.devices.get(new.device_class, 0) if new.device_class else 0
    same_class = sum(1 for s in counted if s.device_class == new.device_class)
    if cap and same_class >= cap:
        return RuleHit(f"devices.{new.device_class}", cap, same_class), []
    cap = rules.pools.get(new.pool, 0) if new.pool else 0
    same_pool = sum(1 for s in counted if s.pool == new.pool)
    if cap and same_pool >= cap:
        return RuleHit(f"pools.{new.pool}", cap, same_pool), []
    networks = {s.network for s in counted if s.network}
    if (
        rules.max_networks
        and new.network
        and new.network not in networks
        and len(networks) >= rules.max_networks
        and rules.network_rule == "block"
    ):
        return RuleHit("networks", rules.max_networks, len(networks)), []
    return None, ending


@dataclass
class SimulationReport:
    """What the proposal would have changed, and what it would not."""

    events: int = 0
    attempts: int = 0
    first_at: str | None = None
    last_at: str | None = None
    # sessions that played but the proposal refuses, by rule
    newly_refused: Counter[str] = field(default_factory=Counter)
    # sessions refused for a limit that the proposal lets play
    newly_admitted: int = 0
    refused_by_rule: Counter[str] = field(default_factory=Counter)
    changed_by_account: Counter[str] = field(default_factory=Counter)
    peak_by_plan: dict[str, int] = field(default_factory=dict)
    recorded_peak_by_plan: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Whether the window held no session event at all."""
        return self.events == 0

    def as_json(self) -> dict[str, Any]:
        """The report as ``simulate_policy --json`` prints it."""
        return {
            "window": {"firstEvent": self.first_at, "lastEvent": self.last_at, "events": self.events},
            "attempts": self.attempts,
            "wouldBeRefused": {"total": sum(self.newly_refused.values()), "byRule": dict(self.newly_refused)},
            "wouldHavePlayed": self.newly_admitted,
            "refusedByRule": dict(self.refused_by_rule),
            "accountsAffected": len(self.changed_by_account),
            "topAccounts": [{"userId": u, "changedDecisions": n} for u, n in self.top_accounts()],
            "peakConcurrencyByPlan": self.peak_by_plan,
            "recordedPeakConcurrencyByPlan": self.recorded_peak_by_plan,
            "assumptions": list(ASSUMPTIONS),
        }

    def top_accounts(self) -> list[tuple[str, int]]:
        """The accounts with the most changed decisions (ties by id), at most TOP_ACCOUNTS."""
        return sorted(self.changed_by_account.items(), key=lambda item: (-item[1], item[0]))[:TOP_ACCOUNTS]


class _Plans:
    """Live sessions per plan, and the highest count seen."""

    def __init__(self) -> None:
        self.live: Counter[str] = Counter()
        self.peak: dict[str, int] = {}

    def add(self, plan: str) -> None:
        self.live[plan] += 1
        self.peak[plan] = max(self.peak.get(plan, 0), self.live[plan])

    def remove(self, plan: str) -> None:
        self.live[plan] -= 1


def simulate(events: Iterable[Event], policy: Policy) -> SimulationReport:
    """Replay ``events`` (oldest first) against ``policy``; see the module's docstring for the assumptions."""
    report = SimulationReport()
    simulated: dict[str, dict[str, tuple[LiveSession, str]]] = defaultdict(dict)  # user -> sid -> (session, plan)
    recorded: dict[str, dict[str, str]] = defaultdict(dict)  # user -> sid -> plan (what really played)
    simulated_plans, recorded_plans = _Plans(), _Plans()
    for event in events:
        if event.type not in (EventType.SESSION_STARTED, EventType.SESSION_REFUSED, EventType.SESSION_ENDED):
            continue
        data = event.data
        user, sid = data.get("userId", ""), data.get("sessionId", "")
        report.events += 1
        report.first_at = report.first_at or timestamp_of(event.at_ms)
        report.last_at = timestamp_of(event.at_ms)
        if event.type is EventType.SESSION_ENDED:
            if (held := simulated[user].pop(sid, None)) is not None:
                simulated_plans.remove(held[1])
            if (plan := recorded[user].pop(sid, None)) is not None:
                recorded_plans.remove(plan)
            continue
        played = event.type is EventType.SESSION_STARTED
        if not played and data.get("code") != LIMIT_CODE:
            continue  # not the policy's to decide
        report.attempts += 1
        plan = data.get("plan") or "(default)"
        if played:
            recorded[user][sid] = plan
            recorded_plans.add(plan)
        rules, _ = policy.rules_for(data.get("plan"))
        limit = rules.max_streams
        if data.get("limitSource") in ("token", "override") and isinstance(data.get("limit"), int):
            limit = data["limit"]
        pool = data.get("pool") or policy.pool_of(data.get("streamId", ""))
        new = LiveSession(
            sid,
            data.get("deviceClass") or "",
            data.get("deviceId") or "",
            pool,
            rules.weight_of(data.get("quality")),
            policy.counts(pool),
            data.get("network") or "",
        )
        live = simulated[user]
        rule, ending = decide(rules, limit, [s for s, _ in live.values()], new, takeover=policy.same_device_takeover)
        if rule is not None:
            report.refused_by_rule[rule.name] += 1
            if played:
                report.newly_refused[rule.name] += 1
                report.changed_by_account[user] += 1
            continue
        for ended in ending:
            simulated_plans.remove(live.pop(ended)[1])
        live[sid] = (new, plan)
        simulated_plans.add(plan)
        if not played:
            report.newly_admitted += 1
            report.changed_by_account[user] += 1
    report.peak_by_plan = dict(sorted(simulated_plans.peak.items()))
    report.recorded_peak_by_plan = dict(sorted(recorded_plans.peak.items()))
    return report
