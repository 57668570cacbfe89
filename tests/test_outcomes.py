"""The one table of outcomes reaches every place it feeds: the API, the dashboard, the metrics, the schema."""

from __future__ import annotations

import pytest
import yaml
from django.test import Client

from dashboard.views import REFUSAL_LABELS
from heartbeat.limiter import metrics
from heartbeat.limiter.decisions import SessionInputs
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.outcomes import (
    BY_SCRIPT_CODE,
    LIMIT_SOURCES,
    METRIC_LABELS,
    OUTCOMES,
    REFUSALS,
    ROWS,
    Outcome,
    staff_label,
)

HAND_OFF_FROM_S3 = SessionInputs(replaces="s3", replace_proof="network")

# Each refusal, made to happen on a real Redis: what the viewer's account went through before the heartbeat.
REFUSED_BY = {
    Outcome.LIMIT_REACHED: lambda m: [m.admit("alice", "movie", f"s{n}") for n in range(3)],
    Outcome.EVICTED: lambda m: (m.admit("alice", "movie", "s3"), m.evict("alice", "s3")),
    Outcome.STOPPED: lambda m: (m.admit("alice", "movie", "s3"), m.stop("alice", "s3", from_other_screen=True)),
    Outcome.BLOCKED: lambda m: m.block_new_sessions("alice", 60),
}


def test_every_outcome_is_a_row_once_and_every_script_code_names_one() -> None:
    assert [row.outcome for row in OUTCOMES] == list(Outcome)
    assert sorted(BY_SCRIPT_CODE) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert len({row.api_code for row in REFUSALS}) == len(REFUSALS) == len(Outcome) - 1


def test_each_refusal_has_a_player_message_a_staff_label_and_a_4xx() -> None:
    for row in REFUSALS:
        assert row.http_status in (400, 403, 429) and row.api_code and row.player_message and row.staff_label
        assert row.retry_later == (row.outcome is Outcome.TOO_MANY_NEW_SESSIONS)
        assert REFUSAL_LABELS[row.metric_label] == f"{row.api_code}: {row.staff_label}"
    assert ROWS[Outcome.ALLOWED].http_status == 200 and ROWS[Outcome.ALLOWED].api_code is None


@pytest.mark.parametrize("outcome", sorted(REFUSED_BY, key=lambda o: o.value))
def test_a_refused_heartbeat_answers_the_tables_code_message_and_status(
    outcome: Outcome, client: Client, make_manager, settings
) -> None:
    manager: StreamManager = make_manager()
    REFUSED_BY[outcome](manager)
    response = client.post(
        "/heartbeat",
        {"userId": "alice", "streamId": "movie", "sessionId": "s3"},
        content_type="application/json",
    )
    row = ROWS[outcome]
    body = response.json()
    assert (response.status_code, body["code"]) == (row.http_status, row.api_code)
    assert body["message"] == row.player_message.format(limit=settings.MAX_CONCURRENT_STREAMS)


def test_a_handed_off_session_is_told_the_tables_code_and_the_new_device(client: Client, make_manager) -> None:
    manager: StreamManager = make_manager()
    manager.admit("alice", "movie", "s3", network="192.0.2.0/24")
    manager.admit("alice", "movie", "tv", device_name="Living room TV", network="192.0.2.0/24", inputs=HAND_OFF_FROM_S3)
    response = client.post(
        "/heartbeat", {"userId": "alice", "streamId": "movie", "sessionId": "s3"}, content_type="application/json"
    )
    row = ROWS[Outcome.HANDED_OFF]
    body = response.json()
    assert (response.status_code, body["code"]) == (row.http_status, row.api_code)
    assert body["message"] == "Playback moved to Living room TV."


def test_a_hand_off_of_a_session_not_on_the_account_answers_the_tables_403(client: Client, make_manager) -> None:
    make_manager().admit("bob", "movie", "bobs-session", network="127.0.0.0/24")
    response = client.post(
        "/heartbeat",
        {"userId": "alice", "streamId": "movie", "sessionId": "s3", "replaces": "bobs-session"},
        content_type="application/json",
    )
    row = ROWS[Outcome.REPLACE_REFUSED]
    assert (
        (response.status_code, response.json()["code"])
        == (row.http_status, row.api_code)
        == (403, "replace_not_allowed")
    )


def test_the_replaced_refusal_answers_the_tables_code(client: Client, make_manager, settings) -> None:
    settings.LIMIT_POLICY = "replace_oldest"
    manager: StreamManager = make_manager(limit_policy="replace_oldest")
    for n in range(4):
        manager.admit("alice", "movie", f"s{n}")
    response = client.post(
        "/heartbeat", {"userId": "alice", "streamId": "movie", "sessionId": "s0"}, content_type="application/json"
    )
    row = ROWS[Outcome.REPLACED]
    assert (response.status_code, response.json()["code"]) == (row.http_status, row.api_code)


def test_every_outcome_is_a_metric_label_exported_from_the_start() -> None:
    assert set(metrics.HEARTBEATS_BY_OUTCOME) == set(METRIC_LABELS)
    assert {row.metric_label for row in OUTCOMES} <= set(METRIC_LABELS)
    assert set(metrics.LIMIT_SOURCES_BY_NAME) == set(LIMIT_SOURCES) == {"override", "token", "plan", "default"}


def enum_of(schemas: dict, prop: dict) -> set[str]:
    """The values a property may take: inline, or behind drf-spectacular's ``$ref``/``allOf`` to a component enum."""
    if "enum" in prop:
        return set(prop["enum"])
    ref = prop.get("$ref") or prop["allOf"][0]["$ref"]
    return set(schemas[ref.rsplit("/", 1)[1]]["enum"])


def test_the_schema_lists_every_refusal_code_and_limit_source(client: Client) -> None:
    schemas = yaml.safe_load(client.get("/api/schema/").content)["components"]["schemas"]
    codes = enum_of(schemas, schemas["HeartbeatBadRequest"]["properties"]["code"])
    assert codes == {row.api_code for row in REFUSALS if row.http_status == 400} | {"invalid_request"}
    forbidden = enum_of(schemas, schemas["HeartbeatForbidden"]["properties"]["code"])
    assert forbidden == {row.api_code for row in REFUSALS if row.http_status == 403} | {"token_mismatch"}
    later = enum_of(schemas, schemas["RetryLater"]["properties"]["code"])
    assert later == {row.api_code for row in REFUSALS if row.retry_later} == {"too_many_new_sessions"}
    for name in ("Allowed", "Sessions"):
        assert enum_of(schemas, schemas[name]["properties"]["limitSource"]) == set(LIMIT_SOURCES)


def test_the_staff_label_reads_the_table() -> None:
    assert staff_label("evicted") == "session_evicted: support had evicted this screen (cool-down)"
