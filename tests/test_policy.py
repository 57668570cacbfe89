"""The policy document (parse_policy, its text) and its versions (PolicyStore, PolicyWatcher), on a real Redis."""

from __future__ import annotations

import copy
import json

import pytest
from redis import Redis

from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.policy import (
    MAX_NAMES_PER_RULE,
    MAX_PLANS,
    Policy,
    PolicyInvalidError,
    parse_policy,
    policy_from_settings,
)
from heartbeat.limiter.policy_store import PolicyConflictError, PolicyStore, PolicyWatcher, describe_version
from heartbeat.limiter.policy_text import MAX_POLICY_BYTES, check_policy_text, load_policy_json, unified_diff
from tests.policies import issue_example

FAMILY = issue_example()


def errors_of(document: object) -> list[str]:
    with pytest.raises(PolicyInvalidError) as raised:
        parse_policy(document)
    return raised.value.errors


def with_changes(**top: object) -> dict:
    document = copy.deepcopy(FAMILY)
    document.update(top)
    return document


def with_plan(**rules: object) -> dict:
    return with_changes(plans={"p": {"maxStreams": 2, **rules}})


# --- parse_policy: the example, inheritance, pools -------------------------------------------------


def test_the_example_of_the_issue_parses_with_every_rule() -> None:
    policy = parse_policy(FAMILY, version=7)
    assert policy.version == 7 and policy.is_applied
    family, named = policy.rules_for("family")
    assert named and family.max_streams == 4
    assert dict(family.devices) == {"mobile": 2, "tv": 3} and dict(family.pools) == {"live": 1}
    assert family.weight_of("uhd") == 2 and family.weight_of("hd") == 1 and family.weight_of(None) == 1
    assert (family.max_networks, family.network_rule) == (2, "block")
    assert policy.same_device_takeover and policy.uncounted_pools == {"free"}


def test_a_plan_inherits_each_rule_it_does_not_set_from_default() -> None:
    document = {
        "default": {
            "maxStreams": 3,
            "devices": {"tv": 1},
            "weights": {"uhd": 2},
            "maxNetworks": 2,
            "networkRule": "flag",
        },
        "plans": {"basic": {"maxStreams": 1, "weights": {}}, "tvs": {"devices": {"tv": 4}}},
    }
    policy = parse_policy(document)
    basic, _ = policy.rules_for("basic")
    assert basic.max_streams == 1 and dict(basic.devices) == {"tv": 1}
    assert dict(basic.weights) == {}  # its own (empty) weights, not default's
    assert (basic.max_networks, basic.network_rule) == (2, "flag")
    tvs, _ = policy.rules_for("tvs")
    assert tvs.max_streams == 3 and dict(tvs.devices) == {"tv": 4} and dict(tvs.weights) == {"uhd": 2}
    assert tvs.as_document() == {
        "maxStreams": 3,
        "devices": {"tv": 4},
        "weights": {"uhd": 2},
        "maxNetworks": 2,
        "networkRule": "flag",
    }


def test_an_unknown_or_missing_plan_gets_default_and_says_so() -> None:
    policy = parse_policy(FAMILY)
    assert policy.rules_for("gold") == (policy.default, False)
    assert policy.rules_for(None) == (policy.default, False)
    assert policy.rules_for("basic")[1] is True


def test_a_stream_is_in_the_first_pool_whose_pattern_matches_and_uncounted_pools_count_nothing() -> None:
    policy = parse_policy(
        with_changes(streams={"live": ["live-*"], "sport": ["live-sport-*", "match-?"]}, uncountedPools=[])
    )
    assert policy.pool_of("live-sport-1") == "live"  # the document's order decides
    assert policy.pool_of("match-3") == "sport" and policy.pool_of("Match-3") == ""  # case matters
    assert policy.pool_of("movie-1") == ""
    family = parse_policy(FAMILY)
    assert family.pool_of("trailer-9") == "free" and not family.counts("free") and family.counts("live")


def test_the_settings_make_a_policy_of_version_zero_that_is_not_applied() -> None:
    policy = policy_from_settings(3, {"basic": 1, "premium": 5})
    assert policy.version == 0 and not policy.is_applied and describe_version(policy) == "settings"
    assert policy.rules_for("premium")[0].max_streams == 5 and policy.default.max_streams == 3
    assert dict(policy.document) == {
        "default": {"maxStreams": 3},
        "plans": {"basic": {"maxStreams": 1}, "premium": {"maxStreams": 5}},
    }
    assert describe_version(parse_policy(FAMILY, version=4)) == "4"


# --- parse_policy: every error, with its JSON path -------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([], "$: must be a JSON object"),
        ({"plans": {}}, "$.default: required"),
        (with_changes(colour="blue"), "$.colour: unknown field"),
        (with_changes(default=3), "$.default: must be an object of rules"),
        (with_changes(default={}), "$.default.maxStreams: required"),
        (with_changes(default={"maxStreams": 0}), "$.default.maxStreams: must be a whole number from 1 to 50"),
        (with_changes(default={"maxStreams": 51}), "$.default.maxStreams: must be a whole number from 1 to 50"),
        (with_changes(default={"maxStreams": True}), "$.default.maxStreams: must be a whole number"),
        (with_changes(default={"maxStreams": 2.0}), "$.default.maxStreams: must be a whole number"),
        (with_changes(default={"maxStreams": "2"}), "$.default.maxStreams: must be a whole number"),
        (with_changes(plans=[]), "$.plans: must be an object of plan name -> rules"),
        (with_changes(plans={"": {"maxStreams": 1}}), "$.plans['']: not a valid plan name"),
        (with_changes(plans={"p": []}), "$.plans.p: must be an object of rules"),
        (with_plan(screens=2), "$.plans.p.screens: unknown rule"),
        (with_plan(devices=[]), "$.plans.p.devices: must be an object of name -> number"),
        (with_plan(devices={"Phone": 1}), "$.plans.p.devices['Phone']: names are 1 to 32 characters"),
        (with_plan(devices={"tv": 0}), "$.plans.p.devices.tv: must be a whole number from 1 to 50"),
        (with_plan(pools={"live": "one"}), "$.plans.p.pools.live: must be a whole number"),
        (with_plan(weights={"4k": 2}), "$.plans.p.weights.4k: unknown quality (expected one of sd, hd, uhd)"),
        (with_plan(maxNetworks=0), "$.plans.p.maxNetworks: must be a whole number from 1 to 50"),
        (with_plan(networkRule="warn"), "$.plans.p.networkRule: must be one of block, flag"),
        (with_changes(streams=["live-*"]), "$.streams: must be an object of pool name -> list of streamId patterns"),
        (with_changes(streams={"Live": ["live-*"]}), "$.streams['Live']: pool names are 1 to 32 characters"),
        (with_changes(streams={"live": []}), "$.streams.live: must be a list of 1 to 100 patterns"),
        (with_changes(streams={"live": "live-*"}), "$.streams.live: must be a list of 1 to 100 patterns"),
        (with_changes(streams={"live": ["live-*", ""]}), "$.streams.live[1]: must be a pattern of 1 to 128 characters"),
        (with_changes(streams={"live": ["x" * 129]}), "$.streams.live[0]: must be a pattern of 1 to 128 characters"),
        (with_changes(uncountedPools="free"), "$.uncountedPools: must be a list of pool names"),
        (with_changes(uncountedPools=["kids"]), "$.uncountedPools: 'kids' is not a pool of $.streams"),
        (with_changes(sameDeviceTakeover="yes"), "$.sameDeviceTakeover: must be true or false"),
        (with_changes(deviceLabels=["phones"]), "$.deviceLabels: must be an object of device class -> plural name"),
        (with_changes(deviceLabels={"Mobile": "phones"}), "$.deviceLabels['Mobile']: device classes are 1 to 32"),
        (with_changes(deviceLabels={"mobile": ""}), "$.deviceLabels.mobile:"),
        (with_changes(description=["a"]), "$.description: must be a string"),
    ],
)
def test_every_error_names_its_json_path(document: object, expected: str) -> None:
    errors = errors_of(document)
    assert any(error.startswith(expected) for error in errors), errors


def test_too_many_plans_or_names_are_refused() -> None:
    many_plans = with_changes(plans={f"plan-{i}": {"maxStreams": 1} for i in range(MAX_PLANS + 1)})
    assert f"$.plans: at most {MAX_PLANS} plans" in errors_of(many_plans)
    many_devices = with_plan(devices={f"d{i}": 1 for i in range(MAX_NAMES_PER_RULE + 1)})
    assert f"$.plans.p.devices: at most {MAX_NAMES_PER_RULE} names" in errors_of(many_devices)


def test_every_error_of_a_document_is_listed_at_once() -> None:
    errors = errors_of({"default": {"maxStreams": 0}, "plans": {"x": {"maxStreams": "2", "bogus": 1}}, "zzz": 1})
    assert errors == [
        "$.zzz: unknown field (expected one of description, default, plans, streams, uncountedPools, "
        "sameDeviceTakeover, deviceLabels)",
        "$.default.maxStreams: must be a whole number from 1 to 50",
        "$.plans.x.bogus: unknown rule (expected one of maxStreams, devices, pools, weights, maxNetworks, networkRule)",
        "$.plans.x.maxStreams: must be a whole number from 1 to 50",
    ]


# --- the text: size, encoding, syntax ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", "$: empty: a policy is one JSON object"),
        (b"  \n", "$: empty: a policy is one JSON object"),
        (
            b'{"default": {"maxStreams": 3},\n "plans": {]}',
            "$: not valid JSON: Expecting property name enclosed in double quotes at line 2, column 12",
        ),
        (b'{"default": {"maxStreams": 3}} x', "$: not valid JSON: Extra data at line 1, column 32"),
        (
            b'{"default": {"maxStreams": 3}, "default": {"maxStreams": 9}}',
            "$: the key 'default' appears twice in one object (JSON keeps only one)",
        ),
        (b'{"default": {"maxStreams": NaN}}', "$: not valid JSON: NaN is not a number JSON allows"),
        (b'{"default": {"maxStreams": 3}, "description": "caf\xe9"}', "$: not UTF-8 text (byte 51)"),
        (b"[" * 60_000, "$: nested too deeply to be a policy"),
        (b'{"default": {"maxStreams": ' + b"9" * 5000 + b"}}", "$: not valid JSON: Exceeds the limit"),
    ],
)
def test_text_that_is_not_one_json_document_is_refused_with_where(text: bytes, expected: str) -> None:
    with pytest.raises(PolicyInvalidError) as raised:
        load_policy_json(text)
    [error] = raised.value.errors
    assert error.startswith(expected), error


def test_text_over_the_size_cap_is_refused_before_it_is_parsed() -> None:
    text = json.dumps({**FAMILY, "description": "x" * MAX_POLICY_BYTES})
    with pytest.raises(PolicyInvalidError) as raised:
        check_policy_text(text)
    assert raised.value.errors == [f"$: the document is {len(text):,} bytes, more than the 65,536 allowed"]
    # At the cap exactly, the text is read.
    padded = json.dumps({**FAMILY, "description": ""})
    padded = padded[:-1] + " " * (MAX_POLICY_BYTES - len(padded)) + "}"
    assert len(padded.encode()) == MAX_POLICY_BYTES and check_policy_text(padded)[0] == {**FAMILY, "description": ""}


def test_a_diff_shows_what_a_version_changed() -> None:
    after = copy.deepcopy(FAMILY)
    after["plans"]["basic"]["maxStreams"] = 2
    lines = unified_diff(FAMILY, after, "version 1", "version 2")
    assert lines[:2] == ["--- version 1", "+++ version 2"]
    assert [line for line in lines if line[:1] in "+-" and line[:3] not in ("---", "+++")] == [
        '-      "maxStreams": 1',
        '+      "maxStreams": 2',
    ]
    first = unified_diff(None, {"default": {"maxStreams": 3}}, "(nothing applied)", "version 1")
    assert first[-1] == "+}" and all(line.startswith(("+", "-", "@")) for line in first)


# --- PolicyStore: versions, the conflict guard, history ---------------------------------------------


@pytest.fixture
def store(redis_client: Redis, key_prefix: str) -> PolicyStore:
    return PolicyStore(redis_client, KeyLayout(key_prefix))


def test_apply_stores_versions_one_after_another_with_who_why_and_when(store: PolicyStore) -> None:
    assert store.current_version() == 0 and store.current() is None and store.history() == []
    first = store.apply(FAMILY, applied_by="cli:alice", reason="the family plan")
    second = store.apply({"default": {"maxStreams": 2}}, applied_by="lead", reason="")
    assert (first.version, second.version) == (1, 2) and store.current_version() == 2
    loaded = store.load(1)
    assert loaded == first and loaded.policy.rules_for("family")[0].max_streams == 4
    assert loaded.as_json()["appliedAt"].endswith("Z") and loaded.as_json()["appliedBy"] == "cli:alice"
    assert store.current() == second and store.load(3) is None


def test_the_history_is_newest_first(store: PolicyStore) -> None:
    for limit in (1, 2, 3, 4):
        store.apply({"default": {"maxStreams": limit}}, applied_by=f"op-{limit}", reason=f"to {limit}")
    history = store.history()
    assert [r.version for r in history] == [4, 3, 2, 1]
    assert [(r.applied_by, r.reason, r.document["default"]["maxStreams"]) for r in history] == [
        (f"op-{n}", f"to {n}", n) for n in (4, 3, 2, 1)
    ]
    assert [r.applied_at for r in history] == sorted((r.applied_at for r in history), reverse=True)


def test_a_document_that_fails_is_never_stored(store: PolicyStore, redis_client: Redis) -> None:
    store.apply(FAMILY, applied_by="a")
    with pytest.raises(PolicyInvalidError):
        store.apply(with_plan(maxStreams=99), applied_by="b")
    assert store.current_version() == 1 and redis_client.hlen(store.keys.policy_versions) == 1
    assert store.current().document == FAMILY


def test_a_stale_expected_version_applies_nothing(store: PolicyStore, redis_client: Redis) -> None:
    # Nothing applied yet: 0 is the version in force.
    assert store.apply(FAMILY, applied_by="a", expected_version=0).version == 1
    store.apply({"default": {"maxStreams": 2}}, applied_by="b", expected_version=1)
    with pytest.raises(PolicyConflictError) as raised:
        store.apply({"default": {"maxStreams": 5}}, applied_by="stale page", expected_version=1)
    assert raised.value.in_force == 2
    assert store.current_version() == 2 and redis_client.hlen(store.keys.policy_versions) == 2
    assert store.apply({"default": {"maxStreams": 5}}, applied_by="c", expected_version=2).version == 3


def test_apply_logs_one_line_per_change(store: PolicyStore, json_log_lines) -> None:
    store.apply(FAMILY, applied_by="cli:alice", reason="why not")
    lines = [line for line in json_log_lines() if line["message"] == "policy applied"]
    assert len(lines) == 1 and lines[0]["version"] == 1 and lines[0]["appliedBy"] == "cli:alice"


# --- PolicyWatcher ----------------------------------------------------------------------------------


def test_the_watcher_reads_redis_at_most_once_per_interval(store: PolicyStore) -> None:
    fallback = policy_from_settings(3, {})
    watcher = PolicyWatcher(store, fallback, check_seconds=3600)
    assert watcher.policy() is fallback  # the first check: nothing applied
    store.apply(FAMILY, applied_by="a")
    # Within the interval no Redis read: the policy in force stays.
    assert watcher.policy() is fallback and watcher.refresh() is fallback


def test_the_watcher_decides_with_the_settings_until_a_version_is_applied_then_the_newest(store: PolicyStore) -> None:
    fallback = policy_from_settings(3, {})
    seen: list[Policy] = []
    watcher = PolicyWatcher(store, fallback, check_seconds=0, on_change=seen.append)
    assert watcher.policy() is fallback and seen == []
    store.apply(FAMILY, applied_by="a")
    assert watcher.policy().version == 1 and [p.version for p in seen] == [1]
    assert watcher.policy().version == 1 and [p.version for p in seen] == [1]  # the same version: no call
    store.apply({"default": {"maxStreams": 2}}, applied_by="b")
    assert watcher.policy().default.max_streams == 2 and [p.version for p in seen] == [1, 2]


def test_a_new_watcher_decides_with_the_version_in_force_from_its_first_call(store: PolicyStore) -> None:
    store.apply(FAMILY, applied_by="a")
    watcher = PolicyWatcher(store, policy_from_settings(3, {}), check_seconds=3600)
    assert watcher.policy().version == 1
