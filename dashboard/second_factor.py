"""The staff's optional TOTP second factor (django-otp), and who must use it.

A staff account with a confirmed TOTP device always logs in with a code. With
``STAFF_REQUIRE_2FA`` on, staff who may evict sessions or change policies
cannot log in (nor stay logged in) without one. A valid code also lifts the
login lockout for its account (``lockout_bypass``), so someone guessing
passwords from the same office address cannot lock out an account that has a
second factor.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from django_otp import verify_token
from django_otp.plugins.otp_totp.models import TOTPDevice

# The permissions whose holders need the second factor when it is required.
PRIVILEGED_PERMISSIONS = ("dashboard.evict_session", "dashboard.change_policy")
# TOTP codes are 6 to 8 ASCII digits; anything else is not worth a database read.
_CODE = re.compile(r"[0-9]{6,8}")


def needs_second_factor(user: AbstractBaseUser) -> bool:
    """Whether ``user`` must log in with a second factor (``STAFF_REQUIRE_2FA`` and a privileged permission)."""
    return settings.STAFF_REQUIRE_2FA and any(user.has_perm(permission) for permission in PRIVILEGED_PERMISSIONS)


def has_device(user: AbstractBaseUser) -> bool:
    """Whether ``user`` has a confirmed TOTP device (and so always logs in with a code)."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def verified_device(request: HttpRequest, user: AbstractBaseUser, code: str) -> TOTPDevice | None:
    """The confirmed TOTP device of ``user`` that accepts ``code`` now, or None.

    A code is good once (django-otp refuses it the second time), and the login
    checks it twice per request (the lockout bypass, then the form), so the
    answer is kept on the request.
    """
    checked: dict[int, TOTPDevice | None] = request.__dict__.setdefault("_staff_second_factor", {})
    if user.pk not in checked:
        checked[user.pk] = _matching_device(user, code.strip())
    return checked[user.pk]


def _matching_device(user: AbstractBaseUser, code: str) -> TOTPDevice | None:
    if not _CODE.fullmatch(code):
        return None
    for device in TOTPDevice.objects.filter(user=user, confirmed=True):
        # verify_token locks the device row, so a code is not accepted twice by two workers.
        verified = verify_token(user, device.persistent_id, code)
        if verified is not None:
            return verified
    return None


def lockout_bypass(request: HttpRequest, credentials: dict | None) -> bool:
    """django-axes' ``AXES_WHITELIST_CALLABLE``: True for a login with the right password and a valid code.

    The code is tried only with the right password, so someone without it
    cannot use up the device's throttle (django-otp slows down after wrong
    codes) and lock its owner out that way instead.
    """
    if request is None or request.method != "POST" or not credentials:
        return False
    code = request.POST.get("otp_token", "")
    username, password = credentials.get("username"), credentials.get("password")
    if not code or not isinstance(username, str) or not isinstance(password, str):
        return False
    try:
        user = get_user_model()._default_manager.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        return False
    if not user.is_active or not user.check_password(password):
        return False
    return verified_device(request, user, code) is not None
