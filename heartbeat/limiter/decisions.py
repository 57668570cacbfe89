"""What a heartbeat brings to a policy's decision, and what the decision says back.

``SessionInputs`` are the session's own facts (device class and id, quality,
pool, the session it hands off from, and what proves the right to end it), as
the API checked them; ``RuleHit`` is the rule that refused, with the words a
viewer reads (``rule_message``). The document itself is ``policy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heartbeat.limiter.policy import Policy


@dataclass(frozen=True)
class SessionInputs:
    """What a heartbeat says about its session beyond the ids (body or token claims), checked by the API."""

    device_class: str = ""
    device_id: str = ""
    quality: str = ""
    pool: str = ""  # a token's ``pool`` claim; "" lets the policy's ``streams`` patterns decide
    replaces: str = ""  # the session this one takes over (a hand-off)
    # What proves the right to end ``replaces`` (admit.lua ARGV[24]): "" an account token,
    # "network" the same client network (no token), "device:<id>" a session token's device.
    replace_proof: str = ""


@dataclass(frozen=True)
class RuleHit:
    """The rule that refused a session: its name, its limit and what it counted."""

    name: str  # "maxStreams", "devices.<class>", "pools.<pool>" or "networks"
    limit: int
    active: int

    def as_json(self) -> dict[str, Any]:
        """The ``rule`` of a refusal's answer."""
        return {"name": self.name, "limit": self.limit, "active": self.active}


def rule_message(policy: Policy, rule: RuleHit, fallback: str) -> str:
    """The words a viewer reads for a refusal by ``rule`` (``fallback``: the maxStreams message)."""
    kind, _, name = rule.name.partition(".")
    if kind == "devices":
        return (
            f"This account is already playing on {rule.active} {policy.device_label(name)}, the most its plan "
            "allows. Stop a video on one of them to watch here."
        )
    if kind == "pools":
        return (
            f"This account is already playing {rule.active} {name} streams at once, the most its plan allows. "
            "Stop one of them to watch this."
        )
    if kind == "networks":
        return (
            f"This account is already playing in {rule.active} places at once, the most its plan allows. "
            "Stop a video in another place to watch here."
        )
    return fallback
