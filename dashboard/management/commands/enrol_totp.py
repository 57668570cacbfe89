"""Give a staff account a TOTP second factor and print the otpauth:// URL for its authenticator app."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from django_otp.plugins.otp_totp.models import TOTPDevice

from streamlimit.commands import OperatorCommand, add_json_argument


class Command(OperatorCommand):
    summary = "Enrol a TOTP device for USERNAME (replacing any it has) and print its otpauth:// URL."
    details = (
        "Give the URL to its owner only, who adds it to an authenticator app (as a QR code, e.g. "
        "`qrencode -t ansiutf8 URL`). From then on the account logs in with a code; with STAFF_REQUIRE_2FA, "
        "staff who may evict must have one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the staff account")
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> str | None:
        try:
            user = get_user_model()._default_manager.get_by_natural_key(options["username"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No account named {options['username']!r}.") from None
        # One device per account: enrolling again (a lost phone) replaces the old one.
        TOTPDevice.objects.filter(user=user).delete()
        device = TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=True)
        if options["json"]:
            self.write_json({"username": options["username"], "otpauthUrl": device.config_url})
            return None
        return device.config_url
