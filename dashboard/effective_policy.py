"""The policy rules an account plays under, as the user page shows them to support.

The account's plan is not stored: it comes with each heartbeat in the
playback token's ``plan`` claim and only the limit's source ("plan",
"default", "token", "override") is kept. So the page shows the rules of the
default and of every plan (each after inheritance), marks the default's when
the limit came from it, and marks the plans whose ``maxStreams`` match the
account's current limit, without guessing which one it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from heartbeat.limiter.policy import PlanRules, Policy
from heartbeat.limiter.read_models import UserLimit

NONE = "\N{EN DASH}"  # a rule the plan does not set


@dataclass(frozen=True)
class RulesRow:
    """One plan's rules (or the default's), in words for the user page."""

    name: str  # "default" or the plan's name
    max_streams: int
    devices: str
    pools: str
    weights: str
    networks: str
    applies: bool  # the default's rules, when the limit came from the default
    matches_limit: bool  # a plan whose maxStreams is the account's limit now (the plan may be this one)


def _caps(caps: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {number}" for name, number in sorted(caps.items())) or NONE


def _row(name: str, rules: PlanRules, *, applies: bool, matches_limit: bool) -> RulesRow:
    networks = f"{rules.max_networks} ({rules.network_rule})" if rules.max_networks else NONE
    return RulesRow(
        name,
        rules.max_streams,
        _caps(rules.devices),
        _caps(rules.pools),
        _caps(rules.weights),
        networks,
        applies,
        matches_limit,
    )


@dataclass(frozen=True)
class EffectivePolicy:
    """The policy in force, its rows of rules, and what the account's limit source says about them."""

    version: int  # 0: no document applied; the settings make the rules
    rows: list[RulesRow]
    uncounted_pools: list[str]
    same_device_takeover: bool
    limit_source: str


def effective_policy(policy: Policy, limit: UserLimit) -> EffectivePolicy:
    """The rows of rules for an account whose limit is ``limit`` under ``policy``."""
    from_plan = limit.source == "plan"
    rows = [_row("default", policy.default, applies=limit.source == "default", matches_limit=False)]
    rows += [
        _row(name, rules, applies=False, matches_limit=from_plan and rules.max_streams == limit.limit)
        for name, rules in sorted(policy.plans.items())
    ]
    return EffectivePolicy(
        policy.version,
        rows,
        sorted(policy.uncounted_pools),
        policy.same_device_takeover,
        limit.source,
    )
