"""Standard Webhooks signatures (the ``standardwebhooks`` package): secrets and the three headers."""

from __future__ import annotations

import base64
import binascii
import os
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
# Standard Webhooks asks for 24 to 64 random bytes.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


class BadSecretError(ValueError):
    """A secret that is not ``whsec_`` followed by base64 of 24 to 64 bytes."""


def check_secret(secret: str) -> str:
    """Return ``secret`` if it is a valid Standard Webhooks secret; else raise BadSecretError (never quoting it)."""
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecretError(f"a secret starts with {SECRET_PREFIX} followed by base64 (make one: webhooks add --help)")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise BadSecretError(f"a secret is {SECRET_PREFIX} followed by base64; this one is not base64") from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise BadSecretError(f"a secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, this one {len(raw)}")
    return secret


def new_secret() -> str:
    """A fresh random secret (32 bytes)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")


class Signer:
    """Signs bodies with one or two secrets (two while rotating: receivers accept either signature)."""

    def __init__(self, secrets: list[str]) -> None:
        if not 1 <= len(secrets) <= 2:
            raise ValueError("one or two secrets")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def headers(self, message_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers of one request."""
        seconds = int(time.time() if now is None else now)
        stamp = datetime.fromtimestamp(seconds, UTC)
        text = body.decode("utf-8")
        signatures = " ".join(hook.sign(message_id, stamp, text) for hook in self._webhooks)
        return {"webhook-id": message_id, "webhook-timestamp": str(seconds), "webhook-signature": signatures}
