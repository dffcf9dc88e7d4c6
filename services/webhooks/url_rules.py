"""Webhook URL rules: the deployment's settings for what a receiver URL may reach, and the error
that refuses one.

A webhook makes hivepipe send requests to a URL chosen by a user, so the URL must never lead to
an address inside the deployment (SSRF). Two checks:

- :func:`services.webhooks.url_parsing.parse_webhook_url` checks the URL's form (scheme, no
  credentials, a host name or a canonical IP literal, a port, a length) and, for an IP
  literal, the address. No DNS.
- :func:`services.webhooks.addresses.address_problem` says why an address may not be reached
  (``None`` when it may). It is used at registration on every address the host name resolves
  to (:func:`services.webhooks.url_parsing.validate_webhook_url`) and again at delivery on the
  address actually connected to.

Settings arrive as a :class:`WebhookRules` value (``HIVEPIPE_WEBHOOK_ALLOW_HTTP``,
``HIVEPIPE_WEBHOOK_ALLOWED_CIDRS``), never from globals.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DEFAULT_MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class WebhookRules:
    """The deployment's webhook settings.

    ``allow_http`` permits plain ``http://`` URLs (self-hosted receivers, tests);
    ``allowed_cidrs`` opens chosen non-public networks (for example ``10.20.0.0/16`` or
    ``127.0.0.0/8``). Some addresses stay closed whatever the list says: see
    :func:`services.webhooks.addresses.address_problem`.
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
