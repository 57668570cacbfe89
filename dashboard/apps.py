from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Staff pages on the live Redis state."""

    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin
        from django.contrib.auth.signals import user_logged_in

        from dashboard.staff_login import StaffLoginForm
        from dashboard.staff_sessions import stamp_login

        user_logged_in.connect(stamp_login, dispatch_uid="dashboard.staff_sessions.stamp_login")
        # The admin's login (the dashboard's too) asks for the TOTP code.
        admin.site.login_form = StaffLoginForm
