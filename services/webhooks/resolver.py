"""Host name resolution for webhook deliveries: cached, TTL-bounded, with an injectable lookup.

Deliveries connect to an address taken from this cache (and checked again right before the
connect), never by handing the host name to the HTTP client's own resolver: a name cannot
resolve to a public address when checked and to an internal one when connected (DNS
rebinding). The stdlib resolver gives no record TTLs, so entries live a fixed ``ttl``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

from services.webhooks.url_rules import IPAddress

ResolveFn = Callable[[str], Awaitable[Sequence[IPAddress]]]


class ResolutionError(OSError):
    """A host name did not resolve (no such name, no address, or the lookup timed out)."""


async def system_resolve(host: str) -> tuple[IPAddress, ...]:
    """The host's A and AAAA addresses from the system resolver (``getaddrinfo``)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolutionError(f"{host}: {exc.strerror or exc}") from exc
    seen: dict[IPAddress, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(ipaddress.ip_address(sockaddr[0]), None)
    return tuple(seen)


class CachingResolver:
    """Resolves host names through ``resolve`` and keeps each answer ``ttl`` seconds.

    Concurrent lookups of one name share a single call to ``resolve``; a failed lookup is
    remembered ``negative_ttl`` seconds so a dead name does not queue lookups; a lookup
    longer than ``timeout`` fails. IP literals are returned as they are, without a lookup.
    """

    def __init__(
        self,
        resolve: ResolveFn = system_resolve,
        *,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        timeout: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._timeout = timeout
        self._max_entries = max_entries
        self._clock = clock
        # host -> (expires at, addresses, or the message of a failed lookup)
        self._entries: dict[str, tuple[float, tuple[IPAddress, ...] | str]] = {}
        self._pending: dict[str, asyncio.Task[tuple[IPAddress, ...]]] = {}

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        """The host's addresses (never empty); raises :class:`ResolutionError`."""
        entry = self._entries.get(host)
        if entry is not None and entry[0] > self._clock():
            if isinstance(entry[1], str):
                raise ResolutionError(entry[1])
            return entry[1]
        try:
            return (ipaddress.ip_address(host),)
        except ValueError:
            pass
        task = self._pending.get(host)
        if task is None:
            task = asyncio.create_task(self._lookup(host), name=f"resolve {host}")
            self._pending[host] = task
            task.add_done_callback(functools.partial(self._done, host))
        # Shielded: one caller giving up (its own timeout) does not cancel the others' lookup.
        return await asyncio.shield(task)

    def forget(self, host: str | None = None) -> None:
        """Drop one cached answer (or all of them)."""
        if host is None:
            self._entries.clear()
        else:
            self._entries.pop(host, None)

    def _done(self, host: str, task: asyncio.Task[tuple[IPAddress, ...]]) -> None:
        if self._pending.get(host) is task:
            del self._pending[host]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already

    async def _lookup(self, host: str) -> tuple[IPAddress, ...]:
        try:
            async with asyncio.timeout(self._timeout):
                addresses = tuple(dict.fromkeys(await self._resolve(host)))
            if not addresses:
                raise ResolutionError(f"{host}: no address")
        except ResolutionError as exc:
            self._store(host, self._negative_ttl, str(exc))
            raise
        except TimeoutError:
            message = f"{host}: lookup timed out after {self._timeout:g} s"
            self._store(host, self._negative_ttl, message)
            raise ResolutionError(message) from None
        except OSError as exc:
            message = f"{host}: {exc}"
            self._store(host, self._negative_ttl, message)
            raise ResolutionError(message) from exc
        self._store(host, self._ttl, addresses)
        return addresses

    def _store(self, host: str, ttl: float, value: tuple[IPAddress, ...] | str) -> None:
        now = self._clock()
        if len(self._entries) >= self._max_entries:
            for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[key]
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries.pop(host, None)
        self._entries[host] = (now + ttl, value)
