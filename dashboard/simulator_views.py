"""The policy simulator's page: replay a window of recorded sessions against a pasted policy document."""

from __future__ import annotations

import json
import time
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_http_methods

from dashboard.forms import SimulatePolicyForm
from dashboard.views import page, support_page, user_url
from heartbeat.limiter.event_reader import parse_window, read_events
from heartbeat.limiter.events import Event, EventType, timestamp_of
from heartbeat.limiter.policy import PolicyInvalidError, parse_policy
from heartbeat.limiter.simulation import ASSUMPTIONS, SimulationReport, simulate
from heartbeat.services import get_policy_store, get_stream_manager

CHANGE_POLICY = "dashboard.change_policy"
SESSION_EVENTS = (EventType.SESSION_STARTED, EventType.SESSION_REFUSED, EventType.SESSION_ENDED)
# What the form starts with when no policy was ever applied: issue 21's example.
EXAMPLE_POLICY = {"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 1}, "family": {"maxStreams": 3}}}


def policy_errors(text: str) -> tuple[Any, list[str]]:
    """The pasted document parsed and checked: (its JSON, []) or (None, every error with its JSON path)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [f"$: not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
    try:
        parse_policy(document)
    except PolicyInvalidError as exc:
        return None, list(exc.errors)
    return document, []


def report_context(report: SimulationReport) -> dict[str, Any]:
    """The report as the page shows it (the same counts as ``simulate_policy --json``)."""
    plans = sorted(set(report.peak_by_plan) | set(report.recorded_peak_by_plan))
    return {
        "report": report,
        "would_be_refused": sum(report.newly_refused.values()),
        "newly_refused": sorted(report.newly_refused.items()),
        "refused_by_rule": sorted(report.refused_by_rule.items()),
        "top_accounts": [(user, n, user_url(user)) for user, n in report.top_accounts()],
        "peaks": [(p, report.peak_by_plan.get(p, 0), report.recorded_peak_by_plan.get(p, 0)) for p in plans],
    }


def initial_policy() -> str:
    """The policy in force (the natural start of a proposal), else an example."""
    record = get_policy_store().current()
    return json.dumps(record.document if record else EXAMPLE_POLICY, indent=2)


@require_http_methods(["GET", "POST"])
@support_page(CHANGE_POLICY)
def simulate_policy(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: check the proposal (nothing replayed when it is invalid), replay the window, report."""
    context: dict[str, Any] = {"title": "Policy simulator", "assumptions": ASSUMPTIONS}
    if request.method == "GET":
        context["form"] = SimulatePolicyForm(initial={"policy": initial_policy(), "window": "24h"})
        return page(request, "dashboard/simulate_policy.html", context)
    form = SimulatePolicyForm(request.POST)
    context["form"] = form
    if not form.is_valid():
        return page(request, "dashboard/simulate_policy.html", context, status=400)
    document, errors = policy_errors(form.cleaned_data["policy"])
    if errors:
        context["policy_errors"] = errors
        return page(request, "dashboard/simulate_policy.html", context, status=400)
    now_ms = int(time.time() * 1000)
    since_ms, until_ms = parse_window(form.cleaned_data["window"], "now", now_ms)
    manager = get_stream_manager()
    entries = read_events(manager.client, manager.keys, since_ms, until_ms, types=SESSION_EVENTS)
    report = simulate((Event.from_json(entry.raw) for entry in entries), parse_policy(document))
    context["window"] = {"since": timestamp_of(since_ms), "until": timestamp_of(until_ms)}
    context["replayed"] = True
    context.update(report_context(report))
    return page(request, "dashboard/simulate_policy.html", context)
