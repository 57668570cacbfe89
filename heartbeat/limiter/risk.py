"""Sharing risk: a score per account from its recorded events, each point with its evidence.

The score is a signal for support to look closer, never proof that an
account is shared: a family on holiday, a new phone or a flaky router all
look like sharing for a while. So every contribution comes with a line of
evidence a person can check ("5 networks in 7 days"), and support can mark an
account "not sharing", which lowers its score (the mark is audited by the
dashboard).

``score_accounts`` reads ``session.started``/``session.refused``/
``session.ended`` events (oldest first) and returns a ``RiskReport`` per
account; ``RiskStore`` keeps the latest scores in Redis for the dashboard's
risk view, and says which accounts crossed ``SHARING_FLAG_SCORE`` since the
last scoring (each crossing is one ``account.sharing_flagged`` event).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis import Redis
from redis.cluster import RedisCluster

from heartbeat.limiter.events import Event, EventType
from heartbeat.limiter.keys import KeyLayout

# What each signal adds, past what one household does on its own (docs/support/sharing.md).
HOUSEHOLD_NETWORKS = 2  # home and one phone network over a week
POINTS_PER_EXTRA_NETWORK = 10
HOUSEHOLD_DEVICES = 5
POINTS_PER_EXTRA_DEVICE = 4
POINTS_PER_EXTRA_CONCURRENT_NETWORK = 20
POINTS_PER_REFUSAL = 2
MAX_REFUSAL_POINTS = 30
POINTS_PER_TAKEOVER_OR_HANDOFF = 1
MAX_TAKEOVER_POINTS = 10
# A "not sharing" mark keeps this share of the score: the signals stay visible, the ranking drops.
NOT_SHARING_FACTOR = 0.25
SCORES_KEPT = 10_000


@dataclass(frozen=True)
class NotSharingMark:
    """Support's judgement that an account is not shared (from the dashboard's audited marks)."""

    marked_by: str
    marked_at: datetime


@dataclass
class RiskReport:
    """One account's score and the evidence for each point of it."""

    user_id: str
    score: int = 0
    evidence: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report as the risk view and ``score_sharing --json`` show it."""
        return {"userId": self.user_id, "score": self.score, "evidence": self.evidence}


@dataclass
class _Account:
    networks: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)
    live: dict[str, str] = field(default_factory=dict)  # session -> network
    peak_networks: int = 0
    peak_at_ms: int = 0
    refusals: int = 0
    takeovers: int = 0

    def concurrent_networks(self) -> int:
        return len({n for n in self.live.values() if n})


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%A %H:%M UTC")


def score_accounts(
    events: Iterable[Event], marks: Mapping[str, NotSharingMark] | None = None, *, window: str = "7 days"
) -> list[RiskReport]:
    """Every account seen in ``events`` with its score and evidence, highest score first."""
    accounts: dict[str, _Account] = defaultdict(_Account)
    for event in events:
        data = event.data
        user, sid = data.get("userId"), data.get("sessionId", "")
        if not user:
            continue
        account = accounts[user]
        if event.type is EventType.SESSION_STARTED:
            network = data.get("network") or ""
            if network:
                account.networks.add(network)
            if device := data.get("deviceId"):
                account.devices.add(device)
            account.live[sid] = network
            if (now := account.concurrent_networks()) > account.peak_networks:
                account.peak_networks, account.peak_at_ms = now, event.at_ms
        elif event.type is EventType.SESSION_REFUSED:
            if data.get("code") == "concurrency_limit_reached":
                account.refusals += 1
        elif event.type is EventType.SESSION_ENDED:
            account.live.pop(sid, None)
            if data.get("reason") in ("replaced", "handed_off"):
                account.takeovers += 1
    marks = marks or {}
    reports = [_report(user, account, marks.get(user), window) for user, account in accounts.items()]
    reports.sort(key=lambda r: (-r.score, r.user_id))
    return reports


def count_of(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless one ("1 session", "4 sessions")."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _report(user: str, account: _Account, mark: NotSharingMark | None, window: str) -> RiskReport:
    report = RiskReport(user)
    points = 0.0
    if (extra := len(account.networks) - HOUSEHOLD_NETWORKS) > 0:
        points += extra * POINTS_PER_EXTRA_NETWORK
        report.evidence.append(f"{len(account.networks)} networks in {window}")
    if (extra := len(account.devices) - HOUSEHOLD_DEVICES) > 0:
        points += extra * POINTS_PER_EXTRA_DEVICE
        report.evidence.append(f"{len(account.devices)} devices in {window}")
    if account.peak_networks > 1:
        points += (account.peak_networks - 1) * POINTS_PER_EXTRA_CONCURRENT_NETWORK
        report.evidence.append(f"{account.peak_networks} networks at once on {_when(account.peak_at_ms)}")
    if account.refusals:
        points += min(MAX_REFUSAL_POINTS, account.refusals * POINTS_PER_REFUSAL)
        report.evidence.append(f"{count_of(account.refusals, 'session')} refused for a limit")
    if account.takeovers:
        points += min(MAX_TAKEOVER_POINTS, account.takeovers * POINTS_PER_TAKEOVER_OR_HANDOFF)
        report.evidence.append(f"{count_of(account.takeovers, 'session')} replaced or handed off")
    if mark is not None and points:
        points *= NOT_SHARING_FACTOR
        report.evidence.append(f"marked not sharing by {mark.marked_by} on {mark.marked_at:%Y-%m-%d}")
    report.score = round(points)
    return report


class RiskStore:
    """The latest scores in Redis (for the dashboard's risk view) and which accounts are flagged."""

    def __init__(self, client: Redis | RedisCluster, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys

    def save(self, reports: list[RiskReport], flag_score: int, scored_at_ms: int) -> list[RiskReport]:
        """Keep ``reports`` (the top SCORES_KEPT), and return the ones that crossed ``flag_score`` since last time.

        An account stays flagged while its score stays at or above
        ``flag_score``; it is flagged again only after it fell below.
        """
        kept = [r for r in reports if r.score > 0][:SCORES_KEPT]
        flagged_before = {m.decode() for m in self.client.smembers(self.keys.risk_flagged)}
        now_flagged = {r.user_id for r in kept if r.score >= flag_score}
        crossed = [r for r in kept if r.user_id in now_flagged - flagged_before]
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.risk_scores, self.keys.risk_evidence, self.keys.risk_flagged)
        if kept:
            pipe.zadd(self.keys.risk_scores, {r.user_id: r.score for r in kept})
            pipe.hset(self.keys.risk_evidence, mapping={r.user_id: orjson.dumps(r.evidence) for r in kept})
        if now_flagged:
            pipe.sadd(self.keys.risk_flagged, *now_flagged)
        pipe.set(self.keys.risk_scored_at, scored_at_ms)
        pipe.execute()
        return crossed

    def top(self, count: int = 100) -> tuple[list[RiskReport], int | None]:
        """The highest scores with their evidence, and when they were scored (epoch ms; None: never)."""
        scored = self.client.zrevrange(self.keys.risk_scores, 0, count - 1, withscores=True)
        users = [u.decode() for u, _ in scored]
        evidence = self.client.hmget(self.keys.risk_evidence, users) if users else []
        scored_at = self.client.get(self.keys.risk_scored_at)
        reports = [
            RiskReport(user, int(score), orjson.loads(lines) if lines else [])
            for user, (_, score), lines in zip(users, scored, evidence, strict=True)
        ]
        return reports, int(scored_at) if scored_at else None
