"""Webhook URL parsing: a receiver URL's form checked and normalised, and the registration check
of every address its host resolves to (see :mod:`services.webhooks.url_rules`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import quote, urlsplit

from services.webhooks.addresses import address_problem, check_address
from services.webhooks.url_rules import IPAddress, WebhookRules, WebhookURLError

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HEX_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*")
# Characters kept as they are in a path or query; anything else is percent-encoded.
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


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
