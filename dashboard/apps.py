from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Staff pages on the live Redis state."""

    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"
