"""Settings for running behind the proxy and in the image: read from the environment at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.test import Client

from tests.conftest import ROOT

# Run first under xdist (tests/conftest.py): it starts Django in processes of its own.
pytestmark = pytest.mark.slow

OLD_KEY = "old-key-" + "o" * 40
NEW_KEY = "new-key-" + "n" * 40

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import RequestFactory
request = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({
    "static_root": str(settings.STATIC_ROOT),
    "var_dir": str(settings.VAR_DIR),
    "proxy_header": getattr(settings, "SECURE_PROXY_SSL_HEADER", None),
    "forwarded_https_is_secure": request.is_secure(),
    "fallbacks": settings.SECRET_KEY_FALLBACKS,
}))
"""


def settings_with(**env: str) -> subprocess.CompletedProcess[str]:
    """Start Django in a new process with ``env`` and report the settings this file is about."""
    clean = {k: v for k, v in os.environ.items() if k not in {"DJANGO_BEHIND_PROXY", "STREAMLIMIT_STATIC_ROOT"}}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "streamlimit.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def read(**env: str) -> dict:
    result = settings_with(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_forwarded_proto_is_ignored_unless_behind_a_proxy() -> None:
    direct = read()
    assert direct["proxy_header"] is None and direct["forwarded_https_is_secure"] is False
    proxied = read(DJANGO_BEHIND_PROXY="true")
    assert proxied["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert proxied["forwarded_https_is_secure"] is True


def test_static_root_defaults_to_var_and_can_be_moved_out_of_it(tmp_path) -> None:
    default = read(STREAMLIMIT_VAR_DIR=str(tmp_path / "state"))
    assert default["static_root"] == str(tmp_path / "state" / "static")
    moved = read(STREAMLIMIT_VAR_DIR=str(tmp_path / "state"), STREAMLIMIT_STATIC_ROOT=str(tmp_path / "static"))
    assert moved["static_root"] == str(tmp_path / "static") and moved["var_dir"] == str(tmp_path / "state")


def test_secret_key_fallbacks_are_a_list_of_long_keys() -> None:
    assert read(DJANGO_SECRET_KEY=NEW_KEY)["fallbacks"] == []
    listed = read(DJANGO_SECRET_KEY=NEW_KEY, DJANGO_SECRET_KEY_FALLBACKS=f"{OLD_KEY}, {OLD_KEY}2")
    assert listed["fallbacks"] == [OLD_KEY, OLD_KEY + "2"]
    short = settings_with(DJANGO_SECRET_KEY=NEW_KEY, DJANGO_SECRET_KEY_FALLBACKS="too-short")
    assert short.returncode != 0 and "DJANGO_SECRET_KEY_FALLBACKS" in short.stderr


@pytest.mark.django_db
def test_staff_stay_signed_in_when_the_old_key_is_a_fallback(staff_user, settings) -> None:
    settings.SECRET_KEY = OLD_KEY
    kept, dropped = Client(), Client()
    for client in (kept, dropped):
        client.force_login(staff_user)
        assert client.get("/dashboard/").status_code == 200
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]
    assert kept.get("/dashboard/").status_code == 200
    # That request moved the session to the new key: the fallback can go.
    settings.SECRET_KEY_FALLBACKS = []
    assert kept.get("/dashboard/").status_code == 200
    # A session that made no request while the fallback was there must sign in again (as after a leak).
    assert dropped.get("/dashboard/").status_code == 302
