"""Where a webhook may go: the URL's shape, and the SSRF guard on every address its host resolves to."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class BadUrlError(ValueError):
    """A URL that is not an absolute http(s) URL with a host."""


class RefusedTargetError(ValueError):
    """A target whose host is, or resolves to, an address webhooks may not reach."""


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL."""

    scheme: str
    host: str
    port: int
    path: str  # with the query

    @property
    def host_header(self) -> str:
        """The Host header: the name, with the port when it is not the scheme's own."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Parse an http(s) URL, or raise BadUrlError saying what is wrong."""
    if len(url) > 2000:
        raise BadUrlError("a URL is at most 2000 characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadUrlError(f"not a URL: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise BadUrlError("the URL must start with http:// or https://")
    if not parts.hostname:
        raise BadUrlError("the URL has no host")
    if parts.username or parts.password:
        raise BadUrlError("the URL may not carry a user name or password (sign with the secret instead)")
    if parts.fragment:
        raise BadUrlError("the URL may not have a #fragment")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], path)


def refused_reason(address: str) -> str | None:
    """Why webhooks may not reach ``address`` (loopback, private, link-local...), or None if they may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    # ::ffff:127.0.0.1 reaches 127.0.0.1; judge the IPv4 address it carries.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, flag in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not global", not ip.is_global),
    ):
        if flag:
            return reason
    return None


def check_literal_host(target: Target, allow_private: bool) -> None:
    """At save time: refuse a host that is an address, or ``localhost``, webhooks may not reach."""
    if allow_private:
        return
    if target.host.lower() in ("localhost", "localhost.") or target.host.lower().endswith(".localhost"):
        raise RefusedTargetError(f"{target.host} is loopback (WEBHOOK_ALLOW_PRIVATE_TARGETS is off)")
    try:
        reason = refused_reason(target.host)
    except ValueError:
        return  # a name: checked on every connection, when it resolves
    if reason:
        raise RefusedTargetError(f"{target.host} is a {reason} address (WEBHOOK_ALLOW_PRIVATE_TARGETS is off)")


def resolve(target: Target, allow_private: bool) -> list[str]:
    """Every address the host resolves to, all checked; RefusedTargetError if any is refused.

    Every one, not the first: a name with one public and one private address
    would otherwise reach the private one on some connections. The caller
    connects to these addresses, not to the name, so the answer checked is the
    answer used (no second lookup to rebind).
    """
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RefusedTargetError(f"{target.host} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            reason = refused_reason(address)
            if reason:
                raise RefusedTargetError(
                    f"{target.host} resolves to {address}, a {reason} address (WEBHOOK_ALLOW_PRIVATE_TARGETS is off)"
                )
    return addresses
