"""Staff pages on the live Redis state: overview, live users, one user, evictions, limits."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

import structlog
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from redis.exceptions import RedisError

from dashboard import actions
from dashboard.charts import hour_charts
from dashboard.effective_policy import effective_policy
from dashboard.forms import BLOCK_CHOICES, EvictAllForm, EvictSessionForm, LimitForm, UserIdForm
from dashboard.models import AuditRecord
from heartbeat.limiter.outcomes import REFUSALS, staff_label
from heartbeat.services import get_live_state, get_stream_manager

logger = structlog.get_logger(__name__)

PAGE_SIZE = 50
SEARCH_RESULTS = 50
# A refusal's decision id (os.urandom(8).hex() in the StreamManager): what support may look up.
DECISION_ID = re.compile(r"[0-9a-f]{16}")
# What each refusal code means, for support reading an account's refusals.
# What support reads for each refusal (``code: what happened``), from the one table of outcomes.
REFUSAL_LABELS = {row.metric_label: staff_label(row.outcome.value) for row in REFUSALS}
RECENT_MINUTES = 5
# The overview's optional auto-refresh: each reload costs Redis a few small reads.
OVERVIEW_REFRESH_SECONDS = 10


def redis_errors_as_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer 503 with a readable page when Redis is unreachable, instead of a 500."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except RedisError:
            logger.exception("dashboard redis error")
            return page(request, "dashboard/redis_down.html", {"title": "Redis is unreachable"}, status=503)

    return wrapper


def page(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    """Render a dashboard page inside the admin's look (header, user tools, styles)."""
    full = {**admin.site.each_context(request), "is_nav_sidebar_enabled": False, **context}
    return render(request, template, full, status=status)


VIEW_SESSIONS = "dashboard.view_sessions"
EVICT_SESSION = "dashboard.evict_session"
CHANGE_LIMIT = "dashboard.change_limit"


def support_page(*permissions: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Staff login required (others go to the admin login), then ``permissions`` (403 otherwise).

    Pages are never cached (they show live state and ids of viewers), and
    Redis errors are shown as a page.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def checked(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if not all(request.user.has_perm(permission) for permission in permissions):
                logger.warning("dashboard permission denied", user=request.user.get_username(), needs=permissions)
                context = {"title": "Not allowed"}
                return page(request, "dashboard/forbidden.html", context, status=403)
            return view(request, *args, **kwargs)

        return never_cache(staff_member_required(redis_errors_as_page(checked)))

    return decorate


def user_url(user_id: str) -> str:
    """The URL of one user's page (ids go in the query string: they may hold '/' or '?')."""
    return f"{reverse('dashboard:user')}?{urlencode({'id': user_id})}"


def refuse_reason(request: HttpRequest, form: EvictSessionForm | EvictAllForm) -> HttpResponse:
    """Back to the user's page, nothing done, saying why the reason was refused."""
    messages.error(request, f"Nothing was done: the reason is not valid. {form.errors['reason'][0]}")
    return HttpResponseRedirect(user_url(form.cleaned_data["id"]))


@require_GET
@support_page(VIEW_SESSIONS)
def overview(request: HttpRequest) -> HttpResponse:
    """Totals now, the last minutes' activity, a chart of the last hour, and the search box."""
    manager = get_stream_manager()
    minutes = get_live_state().activity(60)
    recent = minutes[-RECENT_MINUTES:]
    context = {
        "title": "StreamLimit",
        "stats": get_live_state().stats(),
        "recent_minutes": RECENT_MINUTES,
        "recent_heartbeats": sum(m.heartbeats for m in recent),
        "recent_refusals": sum(m.refused for m in recent),
        "recent_evictions": sum(m.evicted for m in recent),
        "charts": hour_charts(minutes),
        "as_of": timezone.now(),
        "refresh_seconds": OVERVIEW_REFRESH_SECONDS,
        "default_limit": manager.default_limit,
        "form": UserIdForm(),
    }
    return page(request, "dashboard/overview.html", context)


@require_GET
@support_page(VIEW_SESSIONS)
def live_users(request: HttpRequest) -> HttpResponse:
    """Live users, most recent heartbeat first, 50 a page."""
    number = page_number(request.GET.get("page", "1"))
    at_limit = request.GET.get("filter") == "at-limit"
    total, rows = get_live_state().live_users(offset=(number - 1) * PAGE_SIZE, count=PAGE_SIZE, at_limit=at_limit)
    pages = max(1, -(-total // PAGE_SIZE))
    past_the_end = number > pages
    context = {
        "title": "Live users at their limit" if at_limit else "Live users",
        "at_limit": at_limit,
        "query": "filter=at-limit&" if at_limit else "",
        "total": total,
        "rows": [(row, user_url(row.user_id)) for row in rows],
        "page": number,
        "pages": pages,
        "past_the_end": past_the_end,
        "previous_page": min(number - 1, pages) if number > 1 else None,
        "next_page": number + 1 if number < pages else None,
    }
    return page(request, "dashboard/live_users.html", context)


def page_number(raw: str) -> int:
    """A page number from the query string: a bad or huge one is read as page 1 or past the end."""
    try:
        number = int(raw)
    except ValueError:
        return 1
    # Past any real page (10^7 pages of 50 is half a billion users), and
    # small enough that Redis never sees an offset it cannot take.
    return min(max(1, number), 10_000_000)


@require_GET
@support_page(VIEW_SESSIONS)
def user_detail(request: HttpRequest) -> HttpResponse:
    """One user's live sessions, limit and audit trail; also the target of the search box."""
    form = UserIdForm(request.GET)
    if not form.is_valid():
        return page(request, "dashboard/search_error.html", {"title": "Find a user", "form": form}, status=400)
    user_id = form.cleaned_data["id"]
    manager = get_stream_manager()
    limit = get_live_state().get_limit(user_id)
    sessions = get_live_state().sessions(user_id)
    refusals = get_live_state().recent_refusals(user_id)
    # Support looks up the decision id a viewer reads out from the refusal on their screen.
    decision = request.GET.get("decision", "").strip().lower()
    decision_valid = bool(DECISION_ID.fullmatch(decision))
    found = next((r for r in refusals if decision_valid and r.decision_id == decision), None)
    context = {
        "title": f"User {user_id}",
        "user_id": user_id,
        "sessions": sessions,
        # "Not watching now" and "never seen" are different answers for a caller.
        "last_heard": None if sessions else get_live_state().last_heard(user_id),
        "refusals": refusals,
        "decision": decision,
        "decision_valid": decision_valid,
        "decision_found": found,
        "policy": effective_policy(manager.policies.policy(), limit),
        "cooldowns": get_live_state().cooldowns(user_id),
        "blocked_until": get_live_state().blocked_until(user_id),
        "refusal_messages": REFUSAL_LABELS,
        "limit": limit,
        "limit_form": LimitForm(initial={"id": user_id, "limit": limit.override}),
        "audit": AuditRecord.objects.filter(stream_user_id=user_id)[:50],
        "cooldown": manager.eviction_cooldown_seconds,
    }
    return page(request, "dashboard/user.html", context)


@require_GET
@support_page(VIEW_SESSIONS)
def find_users(request: HttpRequest) -> HttpResponse:
    """Accounts heard in the last day whose id starts with what was typed."""
    form = UserIdForm(request.GET)
    if not form.is_valid():
        return page(request, "dashboard/search_error.html", {"title": "Find a user", "form": form}, status=400)
    prefix = form.cleaned_data["id"]
    found = get_live_state().find_users(prefix, count=SEARCH_RESULTS + 1)
    context = {
        "title": "Find a user",
        "form": form,
        "prefix": prefix,
        "rows": [(user, user_url(user.user_id)) for user in found[:SEARCH_RESULTS]],
        "more": len(found) > SEARCH_RESULTS,
        "limit": SEARCH_RESULTS,
    }
    return page(request, "dashboard/find.html", context)


@require_GET
@support_page(VIEW_SESSIONS)
def sharing(request: HttpRequest) -> HttpResponse:
    """Accounts refused most often, and with the most distinct sessions, today and yesterday (UTC)."""
    today = int(timezone.now().timestamp() // 86_400)
    days = []
    for day, label in ((today, "Today"), (today - 1, "Yesterday")):
        refused, distinct = get_live_state().sharing_signals(day)
        days.append(
            {
                "label": label,
                "date": datetime.fromtimestamp(day * 86_400, tz=UTC),
                "refused": [(row, user_url(row.user_id)) for row in refused],
                "distinct": [(row, user_url(row.user_id)) for row in distinct],
            }
        )
    return page(request, "dashboard/sharing.html", {"title": "Account-sharing signals", "days": days})


@require_http_methods(["GET", "POST"])
@support_page(VIEW_SESSIONS, EVICT_SESSION)
def evict(request: HttpRequest) -> HttpResponse:
    """GET: ask to confirm evicting one session. POST: evict it (audited)."""
    form = EvictSessionForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        if set(form.errors) == {"reason"}:
            return refuse_reason(request, form)
        messages.error(request, "That session id is not valid.")
        return HttpResponseRedirect(reverse("dashboard:overview"))
    user_id, session_id = form.cleaned_data["id"], form.cleaned_data["session"]
    if request.method == "GET":
        context = {
            "title": "Evict a session",
            "user_id": user_id,
            "session_id": session_id,
            "user_url": user_url(user_id),
        }
        return page(request, "dashboard/confirm_evict.html", context)
    was_live = actions.evict_session(request.user, user_id, session_id, form.cleaned_data["reason"])
    if was_live:
        messages.success(request, f"Session {session_id} was evicted; its slot is free.")
    else:
        messages.warning(request, f"Session {session_id} is not live: nothing was evicted and no cool-down was set.")
    return HttpResponseRedirect(user_url(user_id))


@require_http_methods(["GET", "POST"])
@support_page(VIEW_SESSIONS, EVICT_SESSION)
def evict_all(request: HttpRequest) -> HttpResponse:
    """GET: ask to confirm evicting every session of a user. POST: evict them (audited)."""
    form = EvictAllForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        if set(form.errors) == {"reason"}:
            return refuse_reason(request, form)
        messages.error(request, "That user id is not valid.")
        return HttpResponseRedirect(reverse("dashboard:overview"))
    user_id = form.cleaned_data["id"]
    if request.method == "GET":
        context = {
            "title": "Evict all sessions",
            "user_id": user_id,
            "session_id": None,
            "user_url": user_url(user_id),
            "block_choices": BLOCK_CHOICES,
        }
        return page(request, "dashboard/confirm_evict.html", context)
    evicted = actions.evict_all(request.user, user_id, form.cleaned_data["reason"])
    messages.success(request, f"Evicted {len(evicted)} session(s).")
    if minutes := form.cleaned_data["block_minutes"]:
        until = actions.block_new_sessions(request.user, user_id, minutes, form.cleaned_data["reason"])
        messages.success(request, f"New sessions of this account are refused until {until:%H:%M} UTC.")
    return HttpResponseRedirect(user_url(user_id))


@require_POST
@support_page(VIEW_SESSIONS, EVICT_SESSION)
def unblock(request: HttpRequest) -> HttpResponse:
    """Lift a block on an account's new sessions (audited)."""
    form = UserIdForm(request.POST)
    if not form.is_valid():
        messages.error(request, "That user id is not valid.")
        return HttpResponseRedirect(reverse("dashboard:overview"))
    user_id = form.cleaned_data["id"]
    if actions.unblock_new_sessions(request.user, user_id):
        messages.success(request, "New sessions of this account may start again.")
    else:
        messages.warning(request, "This account's new sessions were not blocked.")
    return HttpResponseRedirect(user_url(user_id))


@require_POST
@support_page(VIEW_SESSIONS, CHANGE_LIMIT)
def set_limit(request: HttpRequest) -> HttpResponse:
    """Set or clear a user's limit override (audited); bad values are refused with a message."""
    form = LimitForm(request.POST)
    user_id = request.POST.get("id", "")
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, f"Limit not changed: {error}")
        if "id" in form.errors:
            return HttpResponseRedirect(reverse("dashboard:overview"))
        return HttpResponseRedirect(user_url(user_id))
    limit = None if form.cleaned_data["clear"] else form.cleaned_data["limit"]
    result = actions.set_limit(request.user, form.cleaned_data["id"], limit)
    messages.success(request, f"Limit is now {result.limit}" + (" (default)." if result.override is None else "."))
    return HttpResponseRedirect(user_url(form.cleaned_data["id"]))
