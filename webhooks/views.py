"""The dashboard's webhooks page: each endpoint's health and dead letters, with "retry"."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard.views import page, support_page
from webhooks import endpoints, streams
from webhooks.health import read_health
from webhooks.models import DeadLetter, Endpoint

VIEW_ENDPOINTS = "webhooks.view_endpoint"
RETRY_DEAD_LETTERS = "webhooks.retry_deadletter"
DEAD_LETTERS_SHOWN = 50


@require_GET
@support_page(VIEW_ENDPOINTS)
def health(request: HttpRequest) -> HttpResponse:
    """Every endpoint: last success, failures, backlog, lag; its latest dead letters."""
    client, layout = streams.client(), streams.layout()
    rows = []
    for endpoint in Endpoint.objects.all():
        letters = list(DeadLetter.objects.filter(endpoint=endpoint)[:DEAD_LETTERS_SHOWN])
        rows.append(
            {
                "endpoint": endpoint,
                "health": read_health(client, layout, endpoint.pk),
                "dead_letters": letters,
                "dead_total": DeadLetter.objects.filter(endpoint=endpoint).count(),
            }
        )
    context = {
        "title": "Webhooks",
        "rows": rows,
        "can_retry": request.user.has_perm(RETRY_DEAD_LETTERS),
    }
    return page(request, "webhooks/health.html", context)


@require_POST
@support_page(VIEW_ENDPOINTS, RETRY_DEAD_LETTERS)
def retry(request: HttpRequest, letter_id: int) -> HttpResponse:
    """Ask the workers to send one dead letter again (audited); back to the page."""
    letter = get_object_or_404(DeadLetter, pk=letter_id)
    endpoints.request_retry(request.user, letter)
    messages.success(request, f"{letter.event_type} {letter.event_id} will be sent again by a delivery worker.")
    return HttpResponseRedirect(reverse("webhooks:health"))
