"""The policy document: which sessions an account may play, by plan, device class, content pool, weight and network.

One JSON document per deployment, versioned (``policy_store.py`` keeps the
versions in Redis). Its shape is a contract with the operators who write it::

    {"default": {"maxStreams": 3},
     "plans": {"family": {"maxStreams": 4, "devices": {"mobile": 2, "tv": 3}, "pools": {"live": 1},
                          "weights": {"uhd": 2}, "maxNetworks": 2, "networkRule": "block"}},
     "streams": {"live": ["live-*"], "free": ["trailer-*"]},
     "uncountedPools": ["free"],
     "sameDeviceTakeover": true}

``parse_policy`` checks every field and reports every error with its JSON
path; a document that does not parse is never applied. A plan inherits each
rule it does not set from ``default``. With no document applied,
``policy_from_settings`` makes the same shape from ``MAX_CONCURRENT_STREAMS``
and ``PLAN_LIMITS``, and the StreamManager answers exactly as before policies
existed (``Policy.is_applied`` is false).

A little over 300 lines: every check of the document, each with its JSON
path, is here, so that the command, the dashboard and the simulator refuse
the same documents with the same words.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from heartbeat.limiter.ids import NAME_PATTERN, QUALITIES, id_error
from heartbeat.limiter.limits import MAX_LIMIT, MIN_LIMIT

NETWORK_RULES = ("block", "flag")
MAX_PATTERNS_PER_POOL = 100
MAX_PATTERN_LENGTH = 128
MAX_PLANS = 200
MAX_NAMES_PER_RULE = 50
MAX_LABEL_LENGTH = 64

_TOP_LEVEL = (
    "description",
    "default",
    "plans",
    "streams",
    "uncountedPools",
    "sameDeviceTakeover",
    "deviceLabels",
)
_RULES = ("maxStreams", "devices", "pools", "weights", "maxNetworks", "networkRule")


class PolicyInvalidError(ValueError):
    """Raised by ``parse_policy``: ``errors`` lists each problem as ``$.json.path: what is wrong``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class PlanRules:
    """The rules one plan's accounts play under (a plan's own, else inherited from ``default``)."""

    max_streams: int
    devices: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    pools: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    weights: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    max_networks: int = 0  # 0: no cap on networks
    network_rule: str = "block"

    def weight_of(self, quality: str | None) -> int:
        """How many of ``max_streams`` a session of ``quality`` takes (1 unless ``weights`` says)."""
        return self.weights.get(quality, 1) if quality else 1

    def as_document(self) -> dict[str, Any]:
        """The rules in the document's own words (every rule, inherited ones included)."""
        doc: dict[str, Any] = {"maxStreams": self.max_streams}
        if self.devices:
            doc["devices"] = dict(self.devices)
        if self.pools:
            doc["pools"] = dict(self.pools)
        if self.weights:
            doc["weights"] = dict(self.weights)
        if self.max_networks:
            doc["maxNetworks"] = self.max_networks
            doc["networkRule"] = self.network_rule
        return doc


@dataclass(frozen=True)
class Policy:
    """A parsed policy document (or the one the settings make, with ``version`` 0)."""

    version: int
    default: PlanRules
    plans: Mapping[str, PlanRules]
    # pool -> fnmatch patterns of streamId, in the document's order (the first pool that matches wins)
    streams: tuple[tuple[str, tuple[str, ...]], ...] = ()
    uncounted_pools: frozenset[str] = frozenset()
    same_device_takeover: bool = False
    # device class -> how a viewer reads several of them ("phones"), for refusal messages
    device_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    document: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_applied(self) -> bool:
        """Whether an operator applied this document (version >= 1), rather than it coming from the settings."""
        return self.version > 0

    def rules_for(self, plan: str | None) -> tuple[PlanRules, bool]:
        """The rules of ``plan``, and whether the plan is one the policy names (else ``default``'s)."""
        if plan is not None and plan in self.plans:
            return self.plans[plan], True
        return self.default, False

    def pool_of(self, stream_id: str) -> str:
        """The pool ``stream_id`` belongs to ("" for none): the first pool with a matching pattern."""
        cache = self._pool_cache
        pool = cache.get(stream_id)
        if pool is None:
            pool = next(
                (name for name, patterns in self.streams if any(self._match(stream_id, p) for p in patterns)), ""
            )
            if len(cache) >= 10_000:
                cache.clear()  # bounded: stream ids come from players
            cache[stream_id] = pool
        return pool

    def counts(self, pool: str) -> bool:
        """Whether a session in ``pool`` counts against the account's rules (``uncountedPools``)."""
        return pool not in self.uncounted_pools

    def device_label(self, device_class: str) -> str:
        """How a refusal names several devices of ``device_class`` ("phones", or "mobile devices")."""
        return self.device_labels.get(device_class, f"{device_class} devices")

    @cached_property
    def _pool_cache(self) -> dict[str, str]:
        return {}

    @staticmethod
    def _match(stream_id: str, pattern: str) -> bool:
        # fnmatchcase: the same answer on every operating system (fnmatch folds case on Windows).
        return fnmatch.fnmatchcase(stream_id, pattern)


def policy_from_settings(default_limit: int, plan_limits: Mapping[str, int]) -> Policy:
    """The policy the settings make (``MAX_CONCURRENT_STREAMS``, ``PLAN_LIMITS``) when no document is applied."""
    plans = {name: PlanRules(limit) for name, limit in plan_limits.items()}
    document = {
        "default": {"maxStreams": default_limit},
        "plans": {n: {"maxStreams": v} for n, v in plan_limits.items()},
    }
    return Policy(0, PlanRules(default_limit), MappingProxyType(plans), document=MappingProxyType(document))


def parse_policy(document: Any, *, version: int = 0) -> Policy:
    """Check ``document`` (parsed JSON) and return its Policy; raises PolicyInvalidError listing every error."""
    errors: list[str] = []
    if not isinstance(document, dict):
        raise PolicyInvalidError(["$: must be a JSON object"])
    for key in document:
        if key not in _TOP_LEVEL:
            errors.append(f"$.{key}: unknown field (expected one of {', '.join(_TOP_LEVEL)})")
    if "default" not in document:
        errors.append('$.default: required (at least {"maxStreams": N})')
    default = _plan_rules(document["default"], "$.default", errors, inherited=None) if "default" in document else None
    plans: dict[str, PlanRules] = {}
    raw_plans = document.get("plans", {})
    if not isinstance(raw_plans, dict):
        errors.append("$.plans: must be an object of plan name -> rules")
        raw_plans = {}
    elif len(raw_plans) > MAX_PLANS:
        errors.append(f"$.plans: at most {MAX_PLANS} plans")
    for name, rules in raw_plans.items():
        if problem := id_error(name):
            errors.append(f"$.plans[{name!r}]: not a valid plan name: {problem}")
            continue
        plans[name] = _plan_rules(rules, f"$.plans.{name}", errors, inherited=default)
    streams = _streams(document.get("streams", {}), errors)
    pools_named = {name for name, _ in streams}
    uncounted = _names(document.get("uncountedPools", []), "$.uncountedPools", errors)
    for pool in uncounted:
        if pool not in pools_named:
            errors.append(f"$.uncountedPools: {pool!r} is not a pool of $.streams")
    takeover = document.get("sameDeviceTakeover", False)
    if not isinstance(takeover, bool):
        errors.append("$.sameDeviceTakeover: must be true or false")
    labels = _labels(document.get("deviceLabels", {}), errors)
    if "description" in document and not isinstance(document["description"], str):
        errors.append("$.description: must be a string")
    if errors or default is None:
        raise PolicyInvalidError(errors or ["$.default: invalid"])
    return Policy(
        version,
        default,
        MappingProxyType({n: r for n, r in plans.items() if r is not None}),
        streams,
        frozenset(uncounted),
        bool(takeover),
        MappingProxyType(labels),
        MappingProxyType(dict(document)),
    )


def _whole(value: Any, path: str, errors: list[str], low: int = MIN_LIMIT, high: int = MAX_LIMIT) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(f"{path}: must be a whole number from {low} to {high}")
        return None
    return value


def _caps(value: Any, path: str, errors: list[str], *, names: tuple[str, ...] | None = None) -> dict[str, int]:
    if not isinstance(value, dict):
        errors.append(f"{path}: must be an object of name -> number")
        return {}
    if len(value) > MAX_NAMES_PER_RULE:
        errors.append(f"{path}: at most {MAX_NAMES_PER_RULE} names")
    caps: dict[str, int] = {}
    for name, cap in value.items():
        if names is not None and name not in names:
            errors.append(f"{path}.{name}: unknown quality (expected one of {', '.join(names)})")
        elif names is None and not NAME_PATTERN.fullmatch(name):
            errors.append(f"{path}[{name!r}]: names are 1 to 32 characters of a-z, 0-9, '_' and '-'")
        elif (number := _whole(cap, f"{path}.{name}", errors)) is not None:
            caps[name] = number
    return caps


def _plan_rules(value: Any, path: str, errors: list[str], *, inherited: PlanRules | None) -> PlanRules | None:
    if not isinstance(value, dict):
        errors.append(f"{path}: must be an object of rules")
        return None
    for key in value:
        if key not in _RULES:
            errors.append(f"{path}.{key}: unknown rule (expected one of {', '.join(_RULES)})")
    if "maxStreams" in value:
        max_streams = _whole(value["maxStreams"], f"{path}.maxStreams", errors)
    elif inherited is None:
        errors.append(f"{path}.maxStreams: required")
        max_streams = None
    else:
        max_streams = inherited.max_streams
    base = inherited or PlanRules(MIN_LIMIT)
    devices = _caps(value["devices"], f"{path}.devices", errors) if "devices" in value else dict(base.devices)
    pools = _caps(value["pools"], f"{path}.pools", errors) if "pools" in value else dict(base.pools)
    weights = (
        _caps(value["weights"], f"{path}.weights", errors, names=QUALITIES)
        if "weights" in value
        else dict(base.weights)
    )
    if "maxNetworks" in value:
        max_networks = _whole(value["maxNetworks"], f"{path}.maxNetworks", errors) or 0
    else:
        max_networks = base.max_networks
    network_rule = value.get("networkRule", base.network_rule)
    if network_rule not in NETWORK_RULES:
        errors.append(f"{path}.networkRule: must be one of {', '.join(NETWORK_RULES)}")
    if max_streams is None:
        return None
    return PlanRules(
        max_streams,
        MappingProxyType(devices),
        MappingProxyType(pools),
        MappingProxyType(weights),
        max_networks,
        network_rule if network_rule in NETWORK_RULES else "block",
    )


def _streams(value: Any, errors: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        errors.append("$.streams: must be an object of pool name -> list of streamId patterns")
        return ()
    pools = []
    for name, patterns in value.items():
        path = f"$.streams.{name}"
        if not NAME_PATTERN.fullmatch(name):
            errors.append(f"$.streams[{name!r}]: pool names are 1 to 32 characters of a-z, 0-9, '_' and '-'")
            continue
        if not isinstance(patterns, list) or not patterns or len(patterns) > MAX_PATTERNS_PER_POOL:
            errors.append(f"{path}: must be a list of 1 to {MAX_PATTERNS_PER_POOL} patterns")
            continue
        good = []
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LENGTH:
                errors.append(f"{path}[{i}]: must be a pattern of 1 to {MAX_PATTERN_LENGTH} characters")
            else:
                good.append(pattern)
        pools.append((name, tuple(good)))
    return tuple(pools)


def _names(value: Any, path: str, errors: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"{path}: must be a list of pool names")
        return []
    return value


def _labels(value: Any, errors: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        errors.append('$.deviceLabels: must be an object of device class -> plural name ("mobile": "phones")')
        return {}
    labels = {}
    for name, label in value.items():
        if not NAME_PATTERN.fullmatch(name):
            errors.append(f"$.deviceLabels[{name!r}]: device classes are 1 to 32 characters of a-z, 0-9, '_' and '-'")
        elif problem := id_error(label, MAX_LABEL_LENGTH):
            errors.append(f"$.deviceLabels.{name}: {problem}")
        else:
            labels[name] = label
    return labels
