"""Staff pages on the live Redis state: overview, live users, one user, evictions, limits."""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import urlencode

import structlog
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from redis.exceptions import RedisError

from dashboard import actions
from dashboard.charts import hour_chart
from dashboard.forms import LimitForm, SessionForm, UserIdForm
from dashboard.models import AuditRecord
from heartbeat.services import get_stream_manager

logger = structlog.get_logger(__name__)

PAGE_SIZE = 50
RECENT_MINUTES = 5


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


def staff_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff login required (others go to the admin login), and Redis errors shown as a page."""
    return staff_member_required(redis_errors_as_page(view))


def user_url(user_id: str) -> str:
    """The URL of one user's page (ids go in the query string: they may hold '/' or '?')."""
    return f"{reverse('dashboard:user')}?{urlencode({'id': user_id})}"


@require_GET
@staff_page
def overview(request: HttpRequest) -> HttpResponse:
    """Totals now, the last minutes' activity, a chart of the last hour, and the search box."""
    manager = get_stream_manager()
    minutes = manager.activity(60)
    recent = minutes[-RECENT_MINUTES:]
    context = {
        "title": "StreamLimit",
        "stats": manager.stats(),
        "recent_minutes": RECENT_MINUTES,
        "recent_heartbeats": sum(m.heartbeats for m in recent),
        "recent_refusals": sum(m.refused for m in recent),
        "recent_evictions": sum(m.evicted for m in recent),
        "chart": hour_chart(minutes),
        "default_limit": manager.default_limit,
        "form": UserIdForm(),
    }
    return page(request, "dashboard/overview.html", context)


@require_GET
@staff_page
def live_users(request: HttpRequest) -> HttpResponse:
    """Live users, most recent heartbeat first, 50 a page."""
    try:
        number = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        number = 1
    total, rows = get_stream_manager().live_users(offset=(number - 1) * PAGE_SIZE, count=PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    context = {
        "title": "Live users",
        "total": total,
        "rows": [(row, user_url(row.user_id)) for row in rows],
        "page": number,
        "pages": pages,
        "previous_page": number - 1 if number > 1 else None,
        "next_page": number + 1 if number < pages else None,
    }
    return page(request, "dashboard/live_users.html", context)


@require_GET
@staff_page
def user_detail(request: HttpRequest) -> HttpResponse:
    """One user's live sessions, limit and audit trail; also the target of the search box."""
    form = UserIdForm(request.GET)
    if not form.is_valid():
        return page(request, "dashboard/search_error.html", {"title": "Find a user", "form": form}, status=400)
    user_id = form.cleaned_data["id"]
    manager = get_stream_manager()
    limit = manager.get_limit(user_id)
    context = {
        "title": f"User {user_id}",
        "user_id": user_id,
        "sessions": manager.sessions(user_id),
        "limit": limit,
        "limit_form": LimitForm(initial={"id": user_id, "limit": limit.override}),
        "audit": AuditRecord.objects.filter(stream_user_id=user_id)[:50],
        "cooldown": manager.eviction_cooldown_seconds,
    }
    return page(request, "dashboard/user.html", context)


@require_http_methods(["GET", "POST"])
@staff_page
def evict(request: HttpRequest) -> HttpResponse:
    """GET: ask to confirm evicting one session. POST: evict it (audited)."""
    form = SessionForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
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
    was_live = actions.evict_session(request.user, user_id, session_id)
    if was_live:
        messages.success(request, f"Session {session_id} was evicted; its slot is free.")
    else:
        messages.warning(request, f"Session {session_id} was no longer live; it is blocked for the cool-down anyway.")
    return HttpResponseRedirect(user_url(user_id))


@require_http_methods(["GET", "POST"])
@staff_page
def evict_all(request: HttpRequest) -> HttpResponse:
    """GET: ask to confirm evicting every session of a user. POST: evict them (audited)."""
    form = UserIdForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        messages.error(request, "That user id is not valid.")
        return HttpResponseRedirect(reverse("dashboard:overview"))
    user_id = form.cleaned_data["id"]
    if request.method == "GET":
        context = {"title": "Evict all sessions", "user_id": user_id, "session_id": None, "user_url": user_url(user_id)}
        return page(request, "dashboard/confirm_evict.html", context)
    evicted = actions.evict_all(request.user, user_id)
    messages.success(request, f"Evicted {len(evicted)} session(s).")
    return HttpResponseRedirect(user_url(user_id))


@require_POST
@staff_page
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
