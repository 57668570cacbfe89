"""The webhooks app."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Webhook endpoints, their dead letters and the delivery worker."""

    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"
