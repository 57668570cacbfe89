"""Webhook endpoints and the events that could not be delivered to them."""

from __future__ import annotations

from django.db import models


class Endpoint(models.Model):
    """A receiver of signed events: where, with which secrets, which types, on or off."""

    url = models.CharField("URL", max_length=2000)
    # Standard Webhooks secrets ("whsec_" + base64). While receivers move to a new one,
    # every request is signed with both (two signatures in webhook-signature).
    secret = models.CharField(max_length=200)
    previous_secret = models.CharField(max_length=200, blank=True)
    # Event type names (heartbeat.limiter.events.EventType); empty: every type.
    event_types = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"endpoint {self.pk}: {self.url}"

    def secrets(self) -> list[str]:
        """The secrets every request is signed with: the current one, then the previous one if kept."""
        return [self.secret, self.previous_secret] if self.previous_secret else [self.secret]

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to ``event_type``."""
        return not self.event_types or event_type in self.event_types


class DeadLetter(models.Model):
    """An event an endpoint did not take within WEBHOOK_MAX_AGE_HOURS; staff may send it again."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="dead_letters")
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=64)
    account = models.CharField(max_length=128, blank=True)
    # The event's JSON, the body that was sent.
    payload = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    event_at = models.DateTimeField()
    dead_at = models.DateTimeField(auto_now_add=True)
    # Set by "retry" on the dashboard; a worker takes it (retry_claimed_by, retry_claimed_at) and sends it
    # once. A claim older than WEBHOOK_LEASE_SECONDS is another worker's to take: its holder crashed.
    retry_requested_at = models.DateTimeField(null=True, blank=True)
    retry_claimed_by = models.CharField(max_length=200, blank=True)
    retry_claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-dead_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "event_id"], name="one_dead_letter_per_event")]
        permissions = [("retry_deadletter", "Can send a dead letter to its endpoint again")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} for endpoint {self.endpoint_id}"
