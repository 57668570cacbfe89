"""The Sharing signals page's risk view (scores with their evidence) and support's "not sharing" marks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import actions
from dashboard.forms import SharingMarkForm
from dashboard.models import SharingMark
from dashboard.views import VIEW_SESSIONS, page, support_page, user_url
from heartbeat.limiter import risk
from heartbeat.limiter.risk import NOT_SHARING_FACTOR, RiskReport
from heartbeat.services import get_risk_store

MARK_NOT_SHARING = "dashboard.mark_not_sharing"
# The highest scores the view lists (score_sharing --json has them all).
RISK_SHOWN = 200
# The standing marks listed below the scores (newest first), so one can be cleared when its account no longer scores.
MARKS_SHOWN = 50
# What the evidence line of a mark starts with (heartbeat/limiter/risk.py writes it).
MARK_EVIDENCE = "marked not sharing by "
SORTS = {
    "score": ("highest score first", lambda row: (-row.score, row.user_id)),
    "score-asc": ("lowest score first", lambda row: (row.score, row.user_id)),
    "user": ("by user id", lambda row: (row.user_id, -row.score)),
}


# How the score counts, from risk.py's own numbers (docs/support/sharing.md says what each means).
WEIGHTS = [
    f"{risk.POINTS_PER_EXTRA_NETWORK} points for each network past {risk.HOUSEHOLD_NETWORKS} in the window",
    f"{risk.POINTS_PER_EXTRA_DEVICE} points for each device id past {risk.HOUSEHOLD_DEVICES} in the window",
    f"{risk.POINTS_PER_EXTRA_CONCURRENT_NETWORK} points for each network past 1 at the same moment (the peak)",
    f"{risk.POINTS_PER_REFUSAL} points for each session refused for the limit, at most {risk.MAX_REFUSAL_POINTS}",
    f"{risk.POINTS_PER_TAKEOVER_OR_HANDOFF} point for each session replaced or handed off, "
    f"at most {risk.MAX_TAKEOVER_POINTS}",
    f"a not-sharing mark keeps {round(NOT_SHARING_FACTOR * 100)}% of the points",
]


@dataclass(frozen=True)
class RiskRow:
    """One account of the risk view: its score as support should read it now, the evidence and the mark."""

    user_id: str
    url: str
    score: int
    scored: int
    evidence: list[str]
    mark: SharingMark | None
    # Set when a mark was set or cleared after the scoring: what the score shown means until the next one.
    pending: str = ""


def risk_row(report: RiskReport, mark: SharingMark | None) -> RiskRow:
    """The row of one scored account; a mark set or cleared since the scoring shows at once.

    A mark set after the scoring lowers the score shown now, as the next
    scoring will (by NOT_SHARING_FACTOR); a cleared one is said, and the next
    scoring gives the full score back.
    """
    scored_with_mark = any(line.startswith(MARK_EVIDENCE) for line in report.evidence)
    score, pending = report.score, ""
    if mark is not None and not scored_with_mark:
        score = round(report.score * NOT_SHARING_FACTOR)
        pending = f"lowered from {report.score} by the mark set since the scoring; exact at the next scoring"
    elif mark is None and scored_with_mark:
        pending = "the mark was cleared since the scoring: the next scoring gives the full score back"
    return RiskRow(report.user_id, user_url(report.user_id), score, report.score, report.evidence, mark, pending)


def risk_url(sort: str = "score") -> str:
    """The risk view's URL, sorted as asked."""
    base = reverse("dashboard:sharing-risk")
    return base if sort == "score" else f"{base}?sort={sort}"


@require_GET
@support_page(VIEW_SESSIONS)
def sharing_risk(request: HttpRequest) -> HttpResponse:
    """The latest sharing risk scores (manage.py score_sharing), sortable, with evidence and marks."""
    sort = request.GET.get("sort", "score")
    if sort not in SORTS:
        sort = "score"
    reports, scored_at_ms = get_risk_store().top(RISK_SHOWN)
    marks = {m.stream_user_id: m for m in SharingMark.objects.filter(stream_user_id__in=[r.user_id for r in reports])}
    rows = sorted((risk_row(r, marks.get(r.user_id)) for r in reports), key=SORTS[sort][1])
    context = {
        "title": "Account-sharing signals: risk scores",
        "rows": rows,
        "shown": RISK_SHOWN,
        "scored_at": datetime.fromtimestamp(scored_at_ms / 1000, tz=UTC) if scored_at_ms else None,
        "sort": sort,
        "sorts": [(key, label, risk_url(key)) for key, (label, _) in SORTS.items()],
        "score_sort_url": risk_url("score-asc" if sort == "score" else "score"),
        "user_sort_url": risk_url("user"),
        "may_mark": request.user.has_perm(MARK_NOT_SHARING),
        "standing_marks": [(m, user_url(m.stream_user_id)) for m in SharingMark.objects.all()[:MARKS_SHOWN]],
        "factor_percent": round(NOT_SHARING_FACTOR * 100),
        "weights": WEIGHTS,
    }
    return page(request, "dashboard/sharing_risk.html", context)


@require_POST
@support_page(VIEW_SESSIONS, MARK_NOT_SHARING)
def mark_not_sharing(request: HttpRequest) -> HttpResponse:
    """Set (with an optional reason) or clear an account's "not sharing" mark; audited."""
    form = SharingMarkForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(
                request,
                f"Nothing was done: the {'reason' if field == 'reason' else 'user id'} is not valid. {errors[0]}",
            )
        return HttpResponseRedirect(risk_url())
    user_id, reason = form.cleaned_data["id"], form.cleaned_data["reason"]
    if form.cleaned_data["clear"]:
        if actions.clear_not_sharing_mark(request.user, user_id, reason):
            messages.success(request, f"Cleared the not-sharing mark of {user_id}.")
        else:
            messages.warning(request, f"There was no not-sharing mark on {user_id}: nothing changed.")
    else:
        actions.mark_not_sharing(request.user, user_id, reason)
        messages.success(
            request, f"Marked {user_id} not sharing: its score is cut to {round(NOT_SHARING_FACTOR * 100)}%."
        )
    return HttpResponseRedirect(risk_url())
