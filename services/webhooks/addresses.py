"""Webhook address checks: which IP addresses a webhook may connect to, and why not.

Used at registration on every address a URL's host resolves to, and again at delivery on the
address actually connected to (see :mod:`services.webhooks.url_rules`).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from services.webhooks.url_rules import IPAddress, WebhookRules, WebhookURLError

# Never reachable, whatever ``allowed_cidrs`` says: not unicast, or the cloud metadata
# services (their credentials are the classic SSRF prize), or IPv4 addresses written as IPv6
# (a dual-stack socket would reach the IPv4 address; write the IPv4 form instead).
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_ALWAYS_CLOSED_V4 = (
    (IPv4Network("0.0.0.0/8"), "an unspecified ('this network') address"),
    (IPv4Network("224.0.0.0/4"), "a multicast address"),
    (IPv4Network("255.255.255.255/32"), "the broadcast address"),
)
_ALWAYS_CLOSED_V6 = (
    (IPv6Network("::/128"), "the unspecified address"),
    (IPv6Network("::ffff:0:0/96"), "an IPv4-mapped IPv6 address"),
    (IPv6Network("ff00::/8"), "a multicast address"),
)
# Not public, but a deployment may open them with ``allowed_cidrs``.
_SPECIAL_V4 = (
    (IPv4Network("10.0.0.0/8"), "a private address"),
    (IPv4Network("100.64.0.0/10"), "a shared (CGNAT) address"),
    (IPv4Network("127.0.0.0/8"), "a loopback address"),
    (IPv4Network("169.254.0.0/16"), "a link-local address"),
    (IPv4Network("172.16.0.0/12"), "a private address"),
    (IPv4Network("192.0.0.0/24"), "an IETF protocol address"),
    (IPv4Network("192.0.2.0/24"), "a documentation address"),
    (IPv4Network("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (IPv4Network("192.168.0.0/16"), "a private address"),
    (IPv4Network("198.18.0.0/15"), "a benchmarking address"),
    (IPv4Network("198.51.100.0/24"), "a documentation address"),
    (IPv4Network("203.0.113.0/24"), "a documentation address"),
    (IPv4Network("240.0.0.0/4"), "a reserved address"),
)
_SPECIAL_V6 = (
    (IPv6Network("::1/128"), "a loopback address"),
    (IPv6Network("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (IPv6Network("100::/64"), "a discard-only address"),
    (IPv6Network("2001:db8::/32"), "a documentation address"),
    (IPv6Network("2001::/23"), "an IETF protocol address (Teredo, ORCHID, ...)"),
    (IPv6Network("3fff::/20"), "a documentation address"),
    (IPv6Network("5f00::/16"), "an SRv6 SID address"),
    (IPv6Network("fc00::/7"), "a unique local address (ULA)"),
    (IPv6Network("fe80::/10"), "a link-local address"),
    (IPv6Network("fec0::/10"), "a site-local address"),
)
_IPV4_COMPATIBLE = IPv6Network("::/96")  # minus :: and ::1, which keep their own meaning
_NAT64 = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")


def _always_closed(ip: IPAddress) -> str | None:
    if ip in _METADATA:
        return "a cloud metadata service address"
    table = _ALWAYS_CLOSED_V4 if isinstance(ip, IPv4Address) else _ALWAYS_CLOSED_V6
    for net, reason in table:
        if ip in net:
            return reason
    if isinstance(ip, IPv6Address) and ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "an IPv4-compatible IPv6 address"
    return None


def _not_public(ip: IPAddress) -> str | None:
    if isinstance(ip, IPv4Address):
        for net4, reason in _SPECIAL_V4:
            if ip in net4:
                return reason
        return None if ip.is_global else "not a globally routable address"
    if ip.scope_id:
        return "an address with a zone identifier"
    for net6, reason in _SPECIAL_V6:
        if ip in net6:
            return reason
    # Embedded IPv4 addresses: a NAT64 gateway or 6to4 relay would forward to them.
    embedded: IPv4Address | None = None
    if ip in _NAT64:
        embedded = IPv4Address(int(ip) & 0xFFFF_FFFF)
    elif ip in _SIX_TO_FOUR:
        embedded = ip.sixtofour
    if embedded is not None:
        inner = _always_closed(embedded) or _not_public(embedded)
        return f"an IPv6 address embedding {embedded}, {inner}" if inner else None
    return None if ip in _GLOBAL_UNICAST_V6 else "a reserved address"


@lru_cache(maxsize=8192)
def address_problem(ip: IPAddress, rules: WebhookRules) -> str | None:
    """Why a webhook may not connect to ``ip`` (``"a loopback address"``), or ``None``.

    Refused: unspecified, loopback, private, link-local, CGNAT (100.64/10), multicast,
    broadcast, documentation/benchmarking/reserved ranges, IPv6 ULA (fc00::/7) and link-local
    (fe80::/10), IPv4-mapped and -compatible IPv6, NAT64/6to4 addresses embedding a refused
    IPv4 address, any IPv6 address outside 2000::/3. ``rules.allowed_cidrs`` opens addresses it
    contains, except the unspecified, multicast, broadcast, IPv4-mapped/-compatible and cloud
    metadata addresses, which stay closed.
    """
    closed = _always_closed(ip)
    if closed:
        return closed
    if any(ip in net for net in rules.allowed_cidrs if net.version == ip.version):
        return None
    return _not_public(ip)


def check_address(ip: IPAddress, rules: WebhookRules) -> None:
    """Raise :class:`WebhookURLError` (``address_not_allowed``) if ``ip`` may not be reached."""
    problem = address_problem(ip, rules)
    if problem:
        raise WebhookURLError("address_not_allowed", f"{ip} is {problem}")
