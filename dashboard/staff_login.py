"""The staff login form: username, password, and the TOTP code when the account has or needs one."""

from __future__ import annotations

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

from dashboard.second_factor import has_device, needs_second_factor, verified_device


class StaffLoginForm(AdminAuthenticationForm):
    """The admin's login form plus an authentication code (the admin and the dashboard share it)."""

    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=8,
        help_text="From your authenticator app, if your account has one.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "bad_code": "That authentication code is not valid, or was used already: enter the next one.",
        "code_required": "This account logs in with an authentication code: enter the one your app shows.",
        "no_device": (
            "This account must log in with a second factor and has none yet: ask an administrator to run "
            "manage.py enrol_totp with your username."
        ),
    }

    def confirm_login_allowed(self, user: AbstractBaseUser) -> None:
        """Staff only (the admin's rule), then the second factor."""
        super().confirm_login_allowed(user)
        code = self.cleaned_data.get("otp_token", "")
        if code:
            device = verified_device(self.request, user, code)
            if device is None:
                raise ValidationError(self.error_messages["bad_code"], code="bad_code")
            # django-otp keeps it in the session at login: request.user.is_verified().
            user.otp_device = device
        elif has_device(user):
            raise ValidationError(self.error_messages["code_required"], code="code_required")
        elif needs_second_factor(user):
            raise ValidationError(self.error_messages["no_device"], code="no_device")
