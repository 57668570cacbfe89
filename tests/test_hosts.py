"""The Host check of player requests: Django's verdict, remembered only for the names it allowed."""

from __future__ import annotations

import pytest
from django.core.exceptions import DisallowedHost
from django.test import RequestFactory

from heartbeat.edge.hosts import REMEMBERED_HOSTS, AllowedHosts


def request_for(host: str, **extra: str):
    return RequestFactory().post("/heartbeat", HTTP_HOST=host, **extra)


def test_an_allowed_host_passes_every_time(settings) -> None:
    settings.ALLOWED_HOSTS = ["limits.example.com"]
    hosts = AllowedHosts()
    for _ in range(3):
        assert hosts.check(request_for("limits.example.com")) is None
        assert hosts.check(request_for("limits.example.com:8443")) is None
    # Both Host headers were allowed, so both are remembered, for this ALLOWED_HOSTS list.
    assert hosts._allowed == (settings.ALLOWED_HOSTS, {"limits.example.com", "limits.example.com:8443"})


def test_a_disallowed_host_is_refused_every_time(settings) -> None:
    settings.ALLOWED_HOSTS = ["limits.example.com"]
    hosts = AllowedHosts()
    hosts.check(request_for("limits.example.com"))
    for _ in range(3):
        with pytest.raises(DisallowedHost):
            hosts.check(request_for("evil.example.com"))


def test_a_remembered_host_is_refused_once_allowed_hosts_no_longer_lists_it(settings) -> None:
    hosts = AllowedHosts()
    settings.ALLOWED_HOSTS = ["old.example.com", "new.example.com"]
    hosts.check(request_for("old.example.com"))
    settings.ALLOWED_HOSTS = ["new.example.com"]
    with pytest.raises(DisallowedHost):
        hosts.check(request_for("old.example.com"))
    hosts.check(request_for("new.example.com"))


def test_x_forwarded_host_is_checked_when_django_uses_it(settings) -> None:
    settings.ALLOWED_HOSTS = ["limits.example.com"]
    settings.USE_X_FORWARDED_HOST = True
    hosts = AllowedHosts()
    hosts.check(request_for("limits.example.com"))
    with pytest.raises(DisallowedHost):
        hosts.check(request_for("limits.example.com", HTTP_X_FORWARDED_HOST="evil.example.com"))


def test_without_a_host_header_the_server_name_is_checked(settings) -> None:
    settings.ALLOWED_HOSTS = ["limits.example.com"]
    hosts = AllowedHosts()
    hosts.check(RequestFactory().post("/heartbeat", SERVER_NAME="limits.example.com"))
    with pytest.raises(DisallowedHost):
        hosts.check(RequestFactory().post("/heartbeat", SERVER_NAME="evil.example.com"))


def test_with_a_wildcard_endless_allowed_names_are_checked_and_few_remembered(settings) -> None:
    settings.ALLOWED_HOSTS = [".example.com"]
    hosts = AllowedHosts()
    for n in range(REMEMBERED_HOSTS * 2):
        hosts.check(request_for(f"tv{n}.example.com"))
    _, names = hosts._allowed
    assert len(names) == REMEMBERED_HOSTS
    with pytest.raises(DisallowedHost):
        hosts.check(request_for("example.org"))
