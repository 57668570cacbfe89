"""Audit records of what staff and operators did to live sessions and limits, and support's sharing marks."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditRecord(models.Model):
    """One eviction or limit change: who, when, which user and session, what."""

    class Action(models.TextChoices):
        EVICT_SESSION = "evict_session", "Evicted a session"
        EVICT_ALL = "evict_all", "Evicted all sessions"
        SET_LIMIT = "set_limit", "Set a limit override"
        CLEAR_LIMIT = "clear_limit", "Cleared the limit override"
        BLOCK_NEW = "block_new", "Blocked new sessions"
        UNBLOCK_NEW = "unblock_new", "Lifted the block on new sessions"
        # Webhook endpoints (webhooks/endpoints.py): the user id is empty, the detail names the endpoint.
        WEBHOOK_ADD = "webhook_add", "Added a webhook endpoint"
        WEBHOOK_CHANGE = "webhook_change", "Changed a webhook endpoint"
        WEBHOOK_REMOVE = "webhook_remove", "Removed a webhook endpoint"
        WEBHOOK_TEST = "webhook_test", "Sent a test event to a webhook endpoint"
        WEBHOOK_RETRY = "webhook_retry", "Asked to send a dead letter again"
        APPLY_POLICY = "apply_policy", "Applied a limit policy version"
        MARK_NOT_SHARING = "mark_not_sharing", "Marked the account not sharing"
        CLEAR_NOT_SHARING = "clear_not_sharing", "Cleared the not-sharing mark"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The staff account, when the action came from the dashboard; kept as a
    # name too, so the record survives the account and names CLI operators.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=32, choices=Action.choices)
    stream_user_id = models.CharField("user id", max_length=128, db_index=True)
    session_id = models.CharField(max_length=128, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    # Why staff did it, in their words (optional), for whoever reads the trail later.
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The support roles (see the "Support viewer" and "Support agent"
        # groups made by migration 0003, "Support lead" by 0006); they hang on this model only
        # because Django permissions need one.
        permissions = [
            ("view_sessions", "Can see live users and sessions on the dashboard"),
            ("evict_session", "Can evict live sessions"),
            ("change_limit", "Can set or clear an account's limit override"),
            # For the Policy page's form; with STAFF_REQUIRE_2FA its holders log in with a second factor.
            ("change_policy", "Can change the limit policies"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.stream_user_id}"


class SharingMark(models.Model):
    """Support's judgement that an account is not shared: it lowers the account's sharing risk score.

    One per account while it stands; clearing it deletes the row (the audit
    trail keeps who set and cleared it, and why).
    """

    stream_user_id = models.CharField("user id", max_length=128, unique=True)
    # As on AuditRecord: the account when it exists, and its name, which outlives it.
    marked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    marked_by_name = models.CharField(max_length=150)
    marked_at = models.DateTimeField(auto_now_add=True)
    # Why, in support's words (optional; the free-text rule of heartbeat/limiter/ids.py).
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-marked_at", "-id"]
        # Its own permission, not change_limit: the mark hides a fraud signal (the score drops and
        # no account.sharing_flagged follows), a judgement the "Support lead" group holds by default.
        permissions = [("mark_not_sharing", "Can mark an account not sharing (lowers its sharing risk score)")]

    def __str__(self) -> str:
        return f"{self.stream_user_id} not sharing ({self.marked_by_name}, {self.marked_at:%Y-%m-%d})"
