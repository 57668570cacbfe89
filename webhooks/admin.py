"""Endpoints in the Django admin: add, change, on/off, delete, "send a test event"; every change audited."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from webhooks import endpoints
from webhooks.forms import EndpointForm
from webhooks.models import DeadLetter, Endpoint
from webhooks.sending import describe_answer, send_once, test_event_body


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    """Webhook endpoints; the secrets are written through the form and never shown."""

    form = EndpointForm
    list_display = ("id", "url", "shown_types", "enabled", "changed_at")
    list_filter = ("enabled",)
    actions = ["turn_on", "turn_off"]
    fields = ("url", "event_types", "enabled", "description", "new_secret", "drop_previous_secret")

    @admin.display(description="event types")
    def shown_types(self, endpoint: Endpoint) -> str:
        return ", ".join(endpoint.event_types) or "all"

    def save_model(self, request: HttpRequest, obj: Endpoint, form: EndpointForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change:
            endpoints.record_change(request.user, obj, form.changed_for_audit())
        else:
            endpoints.record_added(request.user, obj)

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        endpoints.remove_endpoint(request.user, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for endpoint in list(queryset):
            endpoints.remove_endpoint(request.user, endpoint)

    def _switch(self, request: HttpRequest, queryset, enabled: bool) -> None:
        for endpoint in queryset.exclude(enabled=enabled):
            endpoint.enabled = enabled
            endpoint.save(update_fields=["enabled", "changed_at"])
            endpoints.record_change(request.user, endpoint, ["enabled"])

    @admin.action(description="Turn the selected endpoints on", permissions=["change"])
    def turn_on(self, request: HttpRequest, queryset) -> None:
        self._switch(request, queryset, True)

    @admin.action(description="Turn the selected endpoints off", permissions=["change"])
    def turn_off(self, request: HttpRequest, queryset) -> None:
        self._switch(request, queryset, False)

    def get_urls(self) -> list:
        own = [
            path(
                "<int:endpoint_id>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="webhooks_endpoint_send_test",
            )
        ]
        return own + super().get_urls()

    def send_test_view(self, request: HttpRequest, endpoint_id: int) -> HttpResponse:
        """GET: a confirmation page; POST: send one signed ``webhook.test`` event now and say what came of it."""
        endpoint = get_object_or_404(Endpoint, pk=endpoint_id)
        if not self.has_change_permission(request, endpoint):
            return HttpResponse(status=403)
        change_url = reverse("admin:webhooks_endpoint_change", args=[endpoint.pk])
        if request.method != "POST":
            context = {
                **self.admin_site.each_context(request),
                "title": "Send a test event",
                "endpoint": endpoint,
                "change_url": change_url,
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/webhooks/endpoint/send_test.html", context)
        event_id, body = test_event_body(endpoint)
        answer = send_once(endpoint, event_id, body)
        outcome = f"test event {event_id} {describe_answer(answer)}"
        endpoints.record_test_sent(request.user, endpoint, outcome)
        messages.add_message(request, messages.SUCCESS if answer.delivered else messages.ERROR, outcome)
        return HttpResponseRedirect(change_url)


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Dead letters, read-only here (the dashboard's endpoint page sends them again)."""

    list_display = ("dead_at", "endpoint", "event_type", "event_id", "account", "attempts", "last_error")
    list_filter = ("event_type",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False
