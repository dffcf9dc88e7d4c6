"""Webhook URL rules: what a receiver URL may look like and which addresses it may reach.

A webhook makes hivepipe send requests to a URL chosen by a user, so the URL must never lead to
an address inside the deployment (SSRF). Two checks, both here:

- :func:`parse_webhook_url` checks the URL's form (scheme, no credentials, a host name or a
  canonical IP literal, a port, a length) and, for an IP literal, the address. No DNS.
- :func:`address_problem` says why an address may not be reached (``None`` when it may). It is
  used at registration on every address the host name resolves to
  (:func:`validate_webhook_url`) and again at delivery on the address actually connected to.

Settings arrive as a :class:`WebhookRules` value (``HIVEPIPE_WEBHOOK_ALLOW_HTTP``,
``HIVEPIPE_WEBHOOK_ALLOWED_CIDRS``), never from globals.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import quote, urlsplit

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DEFAULT_MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HEX_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*")
# Characters kept as they are in a path or query; anything else is percent-encoded.
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


@dataclass(frozen=True, slots=True)
class WebhookRules:
    """The deployment's webhook settings.

    ``allow_http`` permits plain ``http://`` URLs (self-hosted receivers, tests);
    ``allowed_cidrs`` opens chosen non-public networks (for example ``10.20.0.0/16`` or
    ``127.0.0.0/8``). Some addresses stay closed whatever the list says: see
    :func:`address_problem`.
    """

    allow_http: bool = False
    allowed_cidrs: tuple[IPNetwork, ...] = ()
    max_url_length: int = DEFAULT_MAX_URL_LENGTH


def parse_cidrs(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse ``"10.0.0.0/8"``-style strings (host bits allowed); raises ``ValueError``."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


class WebhookURLError(ValueError):
    """A URL refused as a webhook target. ``code`` is stable, ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WebhookURL:
    """A webhook URL that passed :func:`parse_webhook_url`, in normalised form.

    ``host`` is lower-case ASCII (IDNA for international names), without brackets or a
    trailing dot; ``ip`` is set when the host is an IP literal; ``target`` is the path and
    query sent in the request line. The fragment of the original URL is dropped (never sent).
    """

    scheme: str
    host: str
    port: int
    target: str
    ip: IPAddress | None = None

    @property
    def url(self) -> str:
        """The normalised URL (default ports omitted)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.target}"


# --- address classification ----------------------------------------------------------------

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


# --- URL form --------------------------------------------------------------------------------


def _ends_in_number(host: str) -> bool:
    # The WHATWG URL rule that makes browsers (and inet_aton) read "2130706433", "0x7f.1",
    # "0177.0.0.1" or "127.1" as IPv4 addresses.
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    return (last.isascii() and last.isdigit()) or bool(_HEX_NUMBER.fullmatch(last))


def _parse_host(raw: str, rules: WebhookRules) -> tuple[str, IPAddress | None]:
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise WebhookURLError("invalid_host", "unbalanced brackets around an IPv6 address")
        inner = raw[1:-1]
        if "%" in inner:
            raise WebhookURLError("invalid_host", "IPv6 zone identifiers are not allowed")
        try:
            ip6 = IPv6Address(inner)
        except ValueError:
            raise WebhookURLError("invalid_host", f"{inner!r} is not an IPv6 address") from None
        check_address(ip6, rules)
        return ip6.compressed, ip6
    if not raw:
        raise WebhookURLError("invalid_host", "the URL has no host")
    if "%" in raw:
        raise WebhookURLError("invalid_host", "percent-encoded host names are not allowed")
    host = raw.lower()
    if not host.isascii():
        # First to ASCII (IDNA maps full-width digits and ideographic dots too): the IP checks
        # below must see the host as the resolver will.
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise WebhookURLError("invalid_host", f"{raw!r} is not a valid host name") from None
    if _ends_in_number(host):
        try:
            ip4 = IPv4Address(host)
        except ValueError:
            raise WebhookURLError(
                "ambiguous_ip",
                f"{raw!r} reads as an IP address in a non-standard form; "
                "write IPv4 addresses as four decimal numbers (203.0.113.7)",
            ) from None
        check_address(ip4, rules)
        return str(ip4), ip4
    host = host.removesuffix(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise WebhookURLError("invalid_host", f"{raw!r} is not a valid host name")
    return host, None


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return authority, None
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise WebhookURLError("invalid_host", "unexpected characters after an IPv6 address")
        return authority[: end + 1], rest[1:] if rest else None
    host, sep, port = authority.rpartition(":")
    return (host, port) if sep else (authority, None)


def parse_webhook_url(url: str, rules: WebhookRules) -> WebhookURL:
    """Check a URL's form and, for an IP literal host, its address; no DNS lookup.

    Raises :class:`WebhookURLError` with one of the codes ``url_too_long``, ``invalid_url``,
    ``scheme_not_allowed``, ``credentials_not_allowed``, ``invalid_host``, ``invalid_port``,
    ``ambiguous_ip``, ``address_not_allowed``.
    """
    if len(url) > rules.max_url_length:
        raise WebhookURLError(
            "url_too_long", f"the URL is longer than {rules.max_url_length} characters"
        )
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in url):
        raise WebhookURLError(
            "invalid_url", "the URL contains whitespace, control characters or a backslash"
        )
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise WebhookURLError("scheme_not_allowed", "the URL must start with https://")
    if scheme == "http" and not rules.allow_http:
        raise WebhookURLError(
            "scheme_not_allowed", "plain http is not allowed on this server: use https://"
        )
    try:
        parts = urlsplit(f"{scheme}://{rest}")
    except ValueError as exc:
        raise WebhookURLError("invalid_url", f"the URL cannot be parsed: {exc}") from None
    authority = parts.netloc
    if "@" in authority:
        raise WebhookURLError(
            "credentials_not_allowed",
            "user names and passwords in the URL are not allowed; "
            "the receiver authenticates requests by their signature",
        )
    raw_host, raw_port = _split_authority(authority)
    host, ip = _parse_host(raw_host, rules)
    if raw_port is None:
        port = _DEFAULT_PORTS[scheme]
    elif raw_port.isascii() and raw_port.isdigit() and 0 < int(raw_port) < 65536:
        port = int(raw_port)
    else:
        raise WebhookURLError("invalid_port", f"{raw_port!r} is not a port number (1-65535)")
    target = quote(parts.path, safe=_SAFE_PATH) or "/"
    if not target.startswith("/"):
        raise WebhookURLError("invalid_url", "the URL path must start with '/'")
    if parts.query:
        target = f"{target}?{quote(parts.query, safe=_SAFE_QUERY)}"
    return WebhookURL(scheme=scheme, host=host, port=port, target=target, ip=ip)


ResolveFn = Callable[[str], Awaitable[Sequence[IPAddress]]]


async def validate_webhook_url(url: str, *, rules: WebhookRules, resolve: ResolveFn) -> WebhookURL:
    """Registration check: the URL's form, then every address its host resolves to.

    ``resolve`` returns the host's addresses (``CachingResolver.resolve`` or a fake) and raises
    on failure. A name that does not resolve is refused (``host_not_found``), and so is one
    with any non-public address (``address_not_allowed``), even next to public ones.
    """
    target = parse_webhook_url(url, rules)
    if target.ip is not None:
        return target
    try:
        addresses = await resolve(target.host)
    except Exception as exc:  # any lookup failure means "cannot register"
        raise WebhookURLError(
            "host_not_found", f"{target.host} does not resolve to an address ({exc})"
        ) from exc
    if not addresses:
        raise WebhookURLError("host_not_found", f"{target.host} does not resolve to an address")
    for address in addresses:
        problem = address_problem(address, rules)
        if problem:
            raise WebhookURLError(
                "address_not_allowed", f"{target.host} resolves to {address}, {problem}"
            )
    return target
