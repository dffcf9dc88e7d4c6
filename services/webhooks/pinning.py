"""Pinned, guarded connections for the HTTP sender: each new connection goes to an address that
was checked, and every socket is checked again right before ``connect()``.

New connections are pinned: aiohttp's resolver is replaced by one that takes a random address
from the same cache (no second lookup), and every socket is checked against the rules again
right before ``connect()``, IP literals included. The URL keeps the host name, so the
``Host`` header, TLS SNI and certificate verification all use the registered name. A
keep-alive connection is reused only for its own host name (aiohttp pools by host, port and
TLS), so a certificate verified for one name never serves another.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp.abc import AbstractResolver, ResolveResult

from services.webhooks.addresses import address_problem
from services.webhooks.resolver import CachingResolver
from services.webhooks.url_rules import IPAddress, WebhookRules

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType


class RefusedAddress(OSError):
    """A connection to an address the rules do not allow was refused before ``connect()``."""


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver hook: one random cached address, checked, for each new connection."""

    def __init__(self, cache: CachingResolver, rules: WebhookRules, rand: random.Random) -> None:
        self._cache = cache
        self._rules = rules
        self._rand = rand

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        ip = self._rand.choice(await self._cache.resolve(host))
        _refuse_if_not_allowed(ip, self._rules)
        return [
            {
                "hostname": host,
                "host": str(ip),
                "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
        ]

    async def close(self) -> None:
        return None


def _refuse_if_not_allowed(ip: IPAddress, rules: WebhookRules) -> None:
    problem = address_problem(ip, rules)
    if problem:
        raise RefusedAddress(f"{ip} is {problem}")


def guarded_socket_factory(rules: WebhookRules) -> Callable[[AddrInfoType], socket.socket]:
    """A socket factory that refuses (:class:`RefusedAddress`) any address the rules forbid:
    the last check, made on the very address about to be connected to."""

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        _refuse_if_not_allowed(ipaddress.ip_address(sockaddr[0]), rules)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def refusal(exc: BaseException) -> RefusedAddress | None:
    """The :class:`RefusedAddress` behind a client error (aiohttp wraps it), if any."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, RefusedAddress):
            return seen
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, RefusedAddress):
            return os_error
        seen = seen.__cause__ or seen.__context__
    return None
