"""The Policy page: the version in force with each plan's effective rules, the history with diffs, and a new version.

Seeing it needs ``view_sessions``; applying a version needs ``change_policy``
as well (the support lead role). A new version is checked exactly as
``manage.py policy validate`` checks a file, and applied only if the version
the page showed is still the one in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import actions
from dashboard.forms import PolicyForm
from dashboard.views import VIEW_SESSIONS, page, support_page
from heartbeat.limiter.policy import PlanRules, Policy
from heartbeat.limiter.policy_store import PolicyConflictError, PolicyRecord
from heartbeat.limiter.policy_text import MAX_POLICY_BYTES, pretty, unified_diff
from heartbeat.services import get_policy_store, get_stream_manager

CHANGE_POLICY = "dashboard.change_policy"
# The rules of a plan in the order the table shows them: (document name, column heading).
RULE_COLUMNS = (
    ("maxStreams", "Slots (maxStreams)"),
    ("weights", "Weights"),
    ("devices", "Per device class"),
    ("pools", "Per pool"),
    ("maxNetworks", "Networks"),
)


@dataclass(frozen=True)
class RuleCell:
    """One rule of one plan as the table shows it, and whether the plan inherits it from ``default``."""

    text: str
    inherited: bool


@dataclass(frozen=True)
class PlanRow:
    """One plan's effective rules (its own, else ``default``'s)."""

    name: str
    cells: list[RuleCell]


@dataclass(frozen=True)
class HistoryEntry:
    """One applied version, and the diff from the version before it."""

    record: PolicyRecord
    in_force: bool
    diff: list[tuple[str, str]]  # (css class, line)


@require_GET
@support_page(VIEW_SESSIONS)
def policy(request: HttpRequest) -> HttpResponse:
    """The version in force, each plan's effective rules, the history with diffs and, for leads, the form."""
    return policy_page(request, None)


@require_POST
@support_page(VIEW_SESSIONS, CHANGE_POLICY)
def apply_policy(request: HttpRequest) -> HttpResponse:
    """Check the pasted version and apply it (audited), unless another version was applied since the page was read."""
    form = PolicyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nothing was applied: the new version is not valid (every error is listed below).")
        return policy_page(request, form, status=400)
    expected = form.cleaned_data["expected_version"]
    try:
        record = actions.apply_policy(
            request.user, form.cleaned_data["document"], expected_version=expected, reason=form.cleaned_data["reason"]
        )
    except PolicyConflictError as exc:
        messages.error(
            request,
            f"Nothing was applied: version {exc.in_force} was applied after this page showed "
            f"{_name(expected)}, and applying yours would have undone it. Read version {exc.in_force} below; "
            "your text is kept in the form: apply it again if it should replace that version.",
        )
        data = request.POST.copy()
        data["expected_version"] = str(exc.in_force)
        return policy_page(request, PolicyForm(data), status=409)
    messages.success(
        request,
        f"Version {record.version} is in force now; every server decides with it within a few seconds.",
    )
    return HttpResponseRedirect(reverse("dashboard:policy"))


def policy_page(request: HttpRequest, form: PolicyForm | None, status: int = 200) -> HttpResponse:
    """Render the page; ``form`` is a submitted one to show again (with its errors), else a fresh one."""
    history = get_policy_store().history()
    current = history[0] if history else None
    policy = current.policy if current else get_stream_manager().policies.fallback
    may_change = request.user.has_perm(CHANGE_POLICY)
    if may_change and form is None:
        form = PolicyForm(
            initial={"document": pretty(dict(policy.document)), "expected_version": current.version if current else 0}
        )
    context = {
        "title": "Limit policy",
        "current": current,
        "policy": policy,
        "document_text": pretty(dict(policy.document)),
        "plans": plan_rows(policy),
        "columns": [heading for _, heading in RULE_COLUMNS],
        "pools": [(name, ", ".join(patterns), policy.counts(name)) for name, patterns in policy.streams],
        "history": history_entries(history),
        "form": form if may_change else None,
        "max_kb": MAX_POLICY_BYTES // 1024,
    }
    return page(request, "dashboard/policy.html", context, status=status)


def plan_rows(policy: Policy) -> list[PlanRow]:
    """``default`` then each plan, with every rule after inheritance (``Policy.rules_for``)."""
    own_plans = policy.document.get("plans", {})
    rows = [PlanRow("default (and any plan not listed)", _cells(policy.default, None))]
    for name in policy.plans:
        rules, _ = policy.rules_for(name)
        rows.append(PlanRow(name, _cells(rules, set(own_plans.get(name, {})))))
    return rows


def history_entries(history: list[PolicyRecord]) -> list[HistoryEntry]:
    """Each version (newest first) with its diff against the version before it."""
    entries = []
    for i, record in enumerate(history):
        before = history[i + 1] if i + 1 < len(history) else None
        if before is None and record.version > 1:
            before = get_policy_store().load(record.version - 1)
        lines = unified_diff(
            before.document if before else None,
            record.document,
            f"version {before.version}" if before else "(nothing applied)",
            f"version {record.version}",
        )
        entries.append(HistoryEntry(record, i == 0, [(_line_class(line), line) for line in lines]))
    return entries


def _cells(rules: PlanRules, own: set[str] | None) -> list[RuleCell]:
    texts = {
        "maxStreams": str(rules.max_streams),
        "weights": _caps(rules.weights),
        "devices": _caps(rules.devices),
        "pools": _caps(rules.pools),
        "maxNetworks": f"{rules.max_networks} ({rules.network_rule})" if rules.max_networks else "no cap",
    }
    # A plan inherits a rule it does not name; networkRule travels with maxNetworks.
    return [
        RuleCell(
            texts[name], own is not None and name not in own and not (name == "maxNetworks" and "networkRule" in own)
        )
        for name, _ in RULE_COLUMNS
    ]


def _caps(caps: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {cap}" for name, cap in caps.items()) if caps else "none"


def _line_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "diff-file"
    if line.startswith("@@"):
        return "diff-hunk"
    if line.startswith("+"):
        return "diff-add"
    if line.startswith("-"):
        return "diff-del"
    return ""


def _name(version: int) -> str:
    return f"version {version}" if version else "no version (the settings' policy)"
