"""Pinned, guarded connections for the HTTP sender: each new connection goes to an address that
was checked, and every socket is checked again right before ``connect()``.

New connections are pinned: :class:`PinnedResolver` takes a random address from the same cache
the sender checked (no second lookup while the answer is cached), checks it, and the client
(:mod:`services.webhooks.http1`) connects to that address; the socket it connects is made by
:func:`guarded_socket_factory`, which checks the very address about to be connected to, IP
literals included. The request keeps the host name, so the ``Host`` header, TLS SNI and
certificate verification all use the registered name. A keep-alive connection is reused only
for its own scheme, host name and port, so a certificate verified for one name never serves
another.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable

from services.webhooks.addresses import address_problem
from services.webhooks.http1 import AddrInfo
from services.webhooks.resolver import CachingResolver
from services.webhooks.url_rules import IPAddress, WebhookRules


class RefusedAddress(OSError):
    """A connection to an address the rules do not allow was refused before ``connect()``."""


class PinnedResolver:
    """The address of each new connection: one random cached address of the host, checked."""

    def __init__(self, cache: CachingResolver, rules: WebhookRules, rand: random.Random) -> None:
        self._cache = cache
        self._rules = rules
        self._rand = rand

    async def pick(self, host: str) -> IPAddress:
        """A random address of ``host`` from the cache; :class:`RefusedAddress` if the rules do
        not allow it, :class:`services.webhooks.resolver.ResolutionError` if it does not
        resolve."""
        ip = self._rand.choice(await self._cache.resolve(host))
        _refuse_if_not_allowed(ip, self._rules)
        return ip


def _refuse_if_not_allowed(ip: IPAddress, rules: WebhookRules) -> None:
    problem = address_problem(ip, rules)
    if problem:
        raise RefusedAddress(f"{ip} is {problem}")


def guarded_socket_factory(rules: WebhookRules) -> Callable[[AddrInfo], socket.socket]:
    """A socket factory that refuses (:class:`RefusedAddress`) any address the rules forbid:
    the last check, made on the very address about to be connected to."""

    def factory(addr_info: AddrInfo) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        _refuse_if_not_allowed(ipaddress.ip_address(sockaddr[0]), rules)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory
