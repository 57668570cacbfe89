"""The client network a player request comes from, for stops without a token.

Without tokens nothing proves who sends a stop, so a stop is taken only from
the network that plays the session (stop.lua). The network is the client's
address (the TCP peer, or our proxy's X-Forwarded-For when DJANGO_BEHIND_PROXY
says to trust it, as for the staff login lockout) cut to its prefix: an IPv4
/24 or an IPv6 /56, the blocks a home or an office is usually given, so a
player whose address changes within its network keeps its sessions, and no
full address is ever stored.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPV4_PREFIX = 24
IPV6_PREFIX = 56


# A player's heartbeats come from the same address every 20 s: parsing it
# with ipaddress costs more than the rest of reading the request.
@functools.lru_cache(maxsize=8192)
def network_of(address: str) -> str:
    """``address``'s network as text ("192.0.2.0/24", "2001:db8:0:100::/56"); "" when it is no IP address."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def client_network(request: HttpRequest) -> str:
    """The network ``request`` comes from (see the module's docstring); "" when unknown.

    The address is the one ``dashboard.client_ip`` picks (the last X-Forwarded-For
    entry behind our proxy, else the peer), read here without its uncached parse.
    """
    peer = request.META.get("REMOTE_ADDR", "")
    if settings.BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        if network := network_of(forwarded):
            return network
    return network_of(peer)
