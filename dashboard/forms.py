"""Forms of the staff dashboard; ids follow the same rule as the API."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from heartbeat.limiter.ids import MAX_ID_LENGTH, free_text_error, id_error
from heartbeat.limiter.limits import MAX_LIMIT, MAX_REASON_LENGTH, MIN_LIMIT
from heartbeat.limiter.policy import PolicyInvalidError
from heartbeat.limiter.policy_text import MAX_POLICY_BYTES, check_policy_text


def validate_id(value: str) -> None:
    """Django validator wrapping the API's id rule."""
    error = id_error(value)
    if error:
        raise ValidationError(error)


def validate_free_text(value: str) -> None:
    """Django validator: free text staff write follows the id rule (see heartbeat/limiter/ids.py)."""
    error = free_text_error(value)
    if error:
        raise ValidationError(error)


class UserIdForm(forms.Form):
    """Look up one account by its exact user id."""

    id = forms.CharField(label="User id", max_length=MAX_ID_LENGTH, strip=False, validators=[validate_id])


class SessionForm(UserIdForm):
    """One session of one account."""

    session = forms.CharField(max_length=MAX_ID_LENGTH, strip=False, validators=[validate_id])


class ReasonField(forms.CharField):
    """An optional reason for an action, kept in the audit record."""

    def __init__(self) -> None:
        super().__init__(
            max_length=MAX_REASON_LENGTH,
            required=False,
            label="Reason (optional, kept in the audit trail)",
            validators=[validate_free_text],
        )


class EvictSessionForm(SessionForm):
    """Evict one session, with an optional reason."""

    reason = ReasonField()


# How long evict-all may also block the account's new sessions, in minutes.
BLOCK_CHOICES = [(0, "no block"), (15, "15 minutes"), (60, "1 hour"), (240, "4 hours"), (1440, "24 hours")]


class EvictAllForm(UserIdForm):
    """Evict every session of one account, optionally block its new sessions, with an optional reason."""

    reason = ReasonField()
    block_minutes = forms.TypedChoiceField(
        choices=BLOCK_CHOICES, coerce=int, required=False, empty_value=0, label="Also block new sessions for"
    )


class LimitForm(UserIdForm):
    """Set a limit override, or clear it."""

    limit = forms.IntegerField(min_value=MIN_LIMIT, max_value=MAX_LIMIT, required=False, label="Limit override")
    clear = forms.BooleanField(required=False)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("clear"):
            # Clearing ignores whatever the number field holds.
            self.errors.pop("limit", None)
            data["limit"] = None
            return data
        if data.get("limit") is None and "limit" not in self.errors:
            self.add_error("limit", f"Enter a limit from {MIN_LIMIT} to {MAX_LIMIT}, or clear it.")
        return data


class PolicyForm(forms.Form):
    """A new policy version pasted on the Policy page, checked exactly as ``manage.py policy validate`` does.

    ``expected_version`` is the version the page showed: applying is refused when
    another was applied since, so a stale page cannot undo a newer version.
    """

    document = forms.CharField(
        label="New version (JSON)",
        strip=False,
        # Characters, a first cheap cap; the byte cap is checked in clean_document.
        max_length=MAX_POLICY_BYTES,
        widget=forms.Textarea(attrs={"rows": 24, "cols": 80, "spellcheck": "false", "class": "policy-text"}),
    )
    reason = ReasonField()
    expected_version = forms.IntegerField(min_value=0, widget=forms.HiddenInput)

    def clean_document(self) -> object:
        """The parsed JSON document; every problem (with its JSON path) is a form error."""
        text = self.cleaned_data["document"]
        try:
            document, _ = check_policy_text(text)
        except PolicyInvalidError as exc:
            raise ValidationError(exc.errors) from exc
        return document


class SharingMarkForm(UserIdForm):
    """Mark an account "not sharing" (with an optional reason), or clear its mark."""

    reason = ReasonField()
    clear = forms.BooleanField(required=False)


# The windows the policy simulator replays, as ``parse_moment`` reads them.
SIMULATION_WINDOWS = [("1h", "last hour"), ("6h", "last 6 hours"), ("24h", "last 24 hours"), ("3d", "last 3 days")]
SIMULATION_WINDOWS += [("7d", "last 7 days")]
# A policy document is small (a few plans and rules); this stops a paste of something else early.
MAX_POLICY_CHARACTERS = 100_000


class SimulatePolicyForm(forms.Form):
    """A proposed policy document (JSON, pasted) and the window of recorded traffic to replay it on."""

    policy = forms.CharField(
        label="Proposed policy (JSON)",
        max_length=MAX_POLICY_CHARACTERS,
        widget=forms.Textarea(attrs={"rows": 16, "cols": 80, "spellcheck": "false"}),
    )
    window = forms.ChoiceField(label="Replay the", choices=SIMULATION_WINDOWS, initial="24h")
