"""Each adapter of another library's private attributes fails here when that library changes under it."""

from __future__ import annotations

import logging

from django.core.handlers.base import BaseHandler
from django.http import HttpResponse
from django.utils.log import log_response
from prometheus_client import CollectorRegistry, Histogram

from heartbeat.adapters.django import load_middleware_from, mark_response_logged, middleware_chain
from heartbeat.adapters.prometheus import add_observations, histogram_bounds
from heartbeat.adapters.stdlib_logging import skip_caller_lookup


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for m in histogram.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


def test_batched_observations_match_observe_one_at_a_time() -> None:
    one_by_one = Histogram("one", "d", buckets=(0.1, 1.0), registry=CollectorRegistry())
    batched = Histogram("batch", "d", buckets=(0.1, 1.0), registry=CollectorRegistry())
    for seconds in (0.05, 0.5, 0.5, 3.0):
        one_by_one.observe(seconds)
    assert histogram_bounds(batched) == [0.1, 1.0, float("inf")]
    add_observations(batched, [1, 2, 1], 4.05)
    renamed = {(name.replace("batch", "one"), le): value for (name, le), value in samples(batched).items()}
    assert renamed == samples(one_by_one) and renamed[("one_bucket", "1.0")] == 3


def test_a_response_marked_logged_is_not_logged_again_by_django(caplog) -> None:
    response = HttpResponse(status=404)
    mark_response_logged(response)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        log_response("Not Found: %s", "/x", response=response)
        log_response("Not Found: %s", "/y", response=HttpResponse(status=404))
    assert [r.getMessage() for r in caplog.records if r.name == "django.request"] == ["Not Found: /y"]


class _Tag:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Tag"] = "yes"
        return response


def test_a_handler_builds_its_chain_from_the_list_it_is_given_and_settings_are_left_alone(settings, rf) -> None:
    before = list(settings.MIDDLEWARE)
    handler = BaseHandler()
    load_middleware_from(handler, ["tests.test_adapters._Tag"])
    assert list(settings.MIDDLEWARE) == before
    # The chain is exactly the one middleware around Django's view call.
    response = middleware_chain(handler)(rf.get("/healthz"))
    assert response["X-Tag"] == "yes"


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_records_no_longer_carry_the_callers_file() -> None:
    # The service's logging set-up has already called it in this process; calling it again changes nothing.
    skip_caller_lookup()
    logger = logging.getLogger("tests.adapters")
    keep = _Keep()
    logger.addHandler(keep)
    try:
        logger.warning("a line")
    finally:
        logger.removeHandler(keep)
    assert [(r.pathname, r.lineno, r.funcName) for r in keep.records] == [("(unknown file)", 0, "(unknown function)")]
