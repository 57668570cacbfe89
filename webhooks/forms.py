"""The admin's endpoint form: a bad URL, secret or event type is a form error, never a 500."""

from __future__ import annotations

from django import forms

from webhooks.endpoints import KNOWN_TYPES, check_url
from webhooks.models import Endpoint
from webhooks.signing import BadSecretError, check_secret
from webhooks.targets import BadUrlError, RefusedTargetError


class EndpointForm(forms.ModelForm):
    """Add or change an endpoint; secrets are written, never shown."""

    url = forms.CharField(label="URL", max_length=2000, help_text="https://... (redirects are not followed)")
    event_types = forms.MultipleChoiceField(
        choices=[(kind, kind) for kind in KNOWN_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every type.",
    )
    new_secret = forms.CharField(
        label="Secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="whsec_ and base64 of 24 to 64 bytes. On a change, a new secret rotates: requests are "
        "signed with the new and the old one until you tick 'drop the previous secret'.",
    )
    drop_previous_secret = forms.BooleanField(required=False, label="Drop the previous secret")

    class Meta:
        model = Endpoint
        fields = ["url", "event_types", "enabled", "description"]

    def clean_url(self) -> str:
        try:
            return check_url(self.cleaned_data["url"])
        except (BadUrlError, RefusedTargetError) as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_new_secret(self) -> str:
        secret = self.cleaned_data.get("new_secret", "")
        if not secret:
            if self.instance.pk is None:
                raise forms.ValidationError("A new endpoint needs a secret.")
            return ""
        try:
            return check_secret(secret)
        except BadSecretError as exc:
            raise forms.ValidationError(str(exc)) from None

    def save(self, commit: bool = True) -> Endpoint:
        endpoint = super().save(commit=False)
        secret = self.cleaned_data.get("new_secret", "")
        if secret and endpoint.pk is not None and secret != endpoint.secret:
            endpoint.previous_secret = endpoint.secret
        if secret:
            endpoint.secret = secret
        if self.cleaned_data.get("drop_previous_secret"):
            endpoint.previous_secret = ""
        if commit:
            endpoint.save()
        return endpoint

    def changed_for_audit(self) -> list[str]:
        """The changed fields as the trail names them (a secret only as "secret")."""
        names = {"new_secret": "secret", "drop_previous_secret": "previous secret dropped"}
        return [names.get(name, name) for name in self.changed_data]
