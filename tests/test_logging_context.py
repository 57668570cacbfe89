"""Correlation ids: the caller's when sane, else a new random UUID."""

from __future__ import annotations

import uuid

import pytest
from django.test import RequestFactory

from heartbeat.edge.logging_context import correlation_id_for, new_correlation_id
from heartbeat.edge.middleware import logged_url


def test_a_new_correlation_id_is_a_version_4_uuid_in_its_usual_text_form() -> None:
    for _ in range(2000):
        text = new_correlation_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_new_correlation_ids_differ_and_use_every_variant_digit() -> None:
    ids = [new_correlation_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert {text[19] for text in ids} == set("89ab")


def test_the_callers_sane_id_is_kept_and_a_hostile_one_replaced() -> None:
    factory = RequestFactory()
    assert correlation_id_for(factory.get("/", HTTP_X_CORRELATION_ID="abc-123")) == "abc-123"
    assert correlation_id_for(factory.get("/", HTTP_X_REQUEST_ID="req-9")) == "req-9"
    made_up = correlation_id_for(factory.get("/", HTTP_X_CORRELATION_ID="bad value\twith tab"))
    assert uuid.UUID(made_up).version == 4
    assert correlation_id_for(factory.get("/"), fresh_id="from-django-structlog") == "from-django-structlog"


@pytest.mark.parametrize("path", ["/heartbeat", "/heartbeat?a=b c", "/heartbeat/x y", "/healthz?", "/sessions/é"])
def test_the_logged_url_of_a_player_request_is_its_full_path(rf, path: str) -> None:
    request = rf.get(path)
    assert logged_url(request) == request.get_full_path()
