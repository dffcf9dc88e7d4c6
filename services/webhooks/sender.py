"""Sending one webhook request: the ``WebhookSender`` port, its HTTP adapter and a fake.

:class:`HttpWebhookSender` (aiohttp) is the real adapter, one per process. Per request it

1. takes a slot for the endpoint's host and then one of the process-wide slots (host first,
   so a slow receiver queues its own deliveries without holding slots other hosts need);
2. resolves the host through the :class:`CachingResolver` and refuses the request if any
   address is not allowed by the :class:`WebhookRules` (a name rebound to an internal
   address after registration is refused here);
3. sends it with a 10 s budget for everything (connect, TLS, request, answer, body), no
   redirects followed, no cookies, no proxies from the environment, and reads at most 1 KiB
   of the answer's body (the connection is closed rather than drained when there is more).

New connections are pinned: aiohttp's resolver is replaced by one that takes a random address
from the same cache (no second lookup), and every socket is checked against the rules again
right before ``connect()``, IP literals included. The URL keeps the host name, so the
``Host`` header, TLS SNI and certificate verification all use the registered name. A
keep-alive connection is reused only for its own host name (aiohttp pools by host, port and
TLS), so a certificate verified for one name never serves another.

aiohttp rather than httpx: measured on this project's 2-core box against a local receiver,
httpx 0.28 / httpcore 1.0 cost 2.3-2.9 ms of CPU per request at 50 concurrent requests
(its pool rescans every connection on each request, and without ``sniffio`` installed
httpcore retries that import on every request), aiohttp 0.13 ms (0.16-0.24 ms for a whole
delivery through this class, JSON and signature included). aiohttp, yarl and aiohappyeyeballs
come with faust-streaming.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from services.webhooks.policy import Outcome, classify_status, parse_retry_after
from services.webhooks.resolver import CachingResolver, ResolutionError
from services.webhooks.signing import USER_AGENT
from services.webhooks.urls import (
    IPAddress,
    WebhookRules,
    WebhookURL,
    WebhookURLError,
    address_problem,
    parse_webhook_url,
)

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The result of one attempt.

    ``status`` is the HTTP status (``None`` when no answer came); ``latency_ms`` the time
    from the lookup to the end of the answer; ``error`` a short human explanation for
    anything but a delivery; ``retry_after`` the answer's ``Retry-After`` in seconds;
    ``response_body`` the first (at most 1 KiB) bytes of the answer's body, for the logs.
    """

    outcome: Outcome
    status: int | None
    latency_ms: float
    error: str | None = None
    retry_after: float | None = None
    response_body: bytes = b""


Headers = Mapping[str, str] | Callable[[], Mapping[str, str]]


class WebhookSender(Protocol):
    """Sends one signed webhook request and says how it went; never raises for the receiver's
    or the network's faults."""

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        """POST ``body`` with ``headers`` to ``url``.

        ``headers`` may be a function returning them: it is called once the request has its
        slot, just before sending, so that a signature's timestamp is not stale after a wait
        behind a slow receiver's queue.
        """
        ...


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """Limits of :class:`HttpWebhookSender`.

    ``timeout`` bounds one attempt from the lookup to the last byte read (time spent waiting
    for a slot is not counted); ``max_concurrency`` is the number of requests in flight in the
    process, ``max_per_host`` per host name; ``keepalive`` how long an idle connection is kept
    (shorter than the 5 s idle timeout of Node and uvicorn servers, so that a request is not
    sent on a connection the receiver is closing).
    """

    timeout: float = 10.0
    max_concurrency: int = 512
    max_per_host: int = 32
    max_response_bytes: int = 1024
    keepalive: float = 4.0


DEFAULT_SENDER_CONFIG = SenderConfig()


class RefusedAddress(OSError):
    """A connection to an address the rules do not allow was refused before ``connect()``."""


@dataclass(slots=True)
class _Slot:
    semaphore: asyncio.Semaphore
    users: int = 0


class _HostSlots:
    """A semaphore per host name, created on first use and dropped when nobody holds it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, _Slot] = {}

    def acquire(self, host: str) -> _Slot:
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = _Slot(asyncio.Semaphore(self._limit))
        slot.users += 1
        return slot

    def release(self, host: str, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users == 0 and self._slots.get(host) is slot:
            del self._slots[host]

    def __len__(self) -> int:
        return len(self._slots)


class _PinnedResolver(AbstractResolver):
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


def _refusal(exc: BaseException) -> RefusedAddress | None:
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


class HttpWebhookSender:
    """The real :class:`WebhookSender`: one aiohttp session (connection pool) per process.

    Create it in the composition root and close it with :meth:`aclose` (or ``async with``);
    the session itself is opened on the first :meth:`send`, inside the running loop.
    ``ssl_context`` defaults to the system's trust store with host name checking; ``rand``
    picks among a host's addresses.
    """

    def __init__(
        self,
        *,
        rules: WebhookRules,
        resolver: CachingResolver | None = None,
        config: SenderConfig = DEFAULT_SENDER_CONFIG,
        ssl_context: ssl.SSLContext | None = None,
        rand: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = rules
        self._cache = resolver if resolver is not None else CachingResolver()
        self._config = config
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        # Spreads load over a host's addresses; not a security decision.
        self._rand = rand if rand is not None else random.Random()  # noqa: S311
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._hosts = _HostSlots(config.max_per_host)
        self._all = asyncio.Semaphore(config.max_concurrency)
        self._targets: dict[str, tuple[WebhookURL, yarl.URL]] = {}

    async def __aenter__(self) -> HttpWebhookSender:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._config.max_concurrency,
            limit_per_host=self._config.max_per_host,
            resolver=_PinnedResolver(self._cache, self._rules, self._rand),
            use_dns_cache=False,
            ssl=self._ssl,
            keepalive_timeout=self._config.keepalive,
            socket_factory=guarded_socket_factory(self._rules),
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            # One budget for the whole attempt is enforced in send(); no aiohttp timers.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
            auto_decompress=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
            skip_auto_headers=("Accept-Encoding",),
            read_bufsize=max(4096, 2 * self._config.max_response_bytes),
        )

    def _target(self, url: str) -> tuple[WebhookURL, yarl.URL]:
        cached = self._targets.get(url)
        if cached is None:
            target = parse_webhook_url(url, self._rules)
            yurl = yarl.URL(target.url, encoded=True)
            # The request must go exactly where the checked URL points.
            if yurl.raw_host != target.host or yurl.port != target.port:
                raise WebhookURLError("invalid_url", "the URL is read differently by the client")
            if len(self._targets) >= 10_000:
                self._targets.clear()
            cached = self._targets[url] = (target, yurl)
        return cached

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        """POST ``body`` to ``url``; see the module documentation for the steps and checks."""
        try:
            target, yurl = self._target(url)
        except WebhookURLError as exc:
            return DeliveryResult("failed", None, 0.0, f"{exc.code}: {exc.reason}")
        if self._session is None:
            self._session = self._open()
        slot = self._hosts.acquire(target.host)
        try:
            async with slot.semaphore, self._all:
                return await self._attempt(target, yurl, body, headers)
        finally:
            self._hosts.release(target.host, slot)

    async def _attempt(
        self, target: WebhookURL, yurl: yarl.URL, body: bytes, headers: Headers
    ) -> DeliveryResult:
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self._config.timeout
        fields = dict(headers() if callable(headers) else headers)

        def failure(outcome: Outcome, error: str) -> DeliveryResult:
            return DeliveryResult(outcome, None, (time.perf_counter() - started) * 1000, error)

        assert self._session is not None
        try:
            async with asyncio.timeout_at(deadline):
                if target.ip is None:
                    for address in await self._cache.resolve(target.host):
                        problem = address_problem(address, self._rules)
                        if problem:
                            return failure(
                                "failed",
                                f"address_not_allowed: {target.host} resolves to {address}, "
                                f"{problem}",
                            )
                response = await self._session.post(
                    yurl, data=body, headers=fields, allow_redirects=False
                )
        except TimeoutError:
            return failure("retry", f"timeout: no answer within {self._config.timeout:g} s")
        except RefusedAddress as exc:
            return failure("failed", f"address_not_allowed: {exc}")
        except ResolutionError as exc:
            return failure("retry", f"dns: {exc}")
        except aiohttp.ClientError as exc:
            refused = _refusal(exc)
            if refused is not None:
                return failure("failed", f"address_not_allowed: {refused}")
            if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                error = f"tls: {exc.certificate_error}"
            elif isinstance(exc, aiohttp.ClientConnectorDNSError):
                error = f"dns: {exc.os_error}"
            else:
                error = f"{type(exc).__name__}: {exc}"
            return failure("retry", error[:500])
        except OSError as exc:
            return failure("retry", f"{type(exc).__name__}: {exc}"[:500])

        # The answer's status stands even if its body is slow or cut: the body is only logged.
        chunks: list[bytes] = []
        complete = False
        try:
            async with asyncio.timeout_at(deadline):
                complete = await self._read_excerpt(response, chunks)
        except (TimeoutError, aiohttp.ClientError):
            complete = False
        finally:
            if complete:
                response.release()
            else:
                response.close()  # drop the connection rather than drain an unread body
        latency_ms = (time.perf_counter() - started) * 1000
        return self._result(response, latency_ms, b"".join(chunks))

    async def _read_excerpt(self, response: aiohttp.ClientResponse, chunks: list[bytes]) -> bool:
        """Read at most ``max_response_bytes`` of the body into ``chunks``; True if that was all."""
        size, limit = 0, self._config.max_response_bytes
        while size < limit:
            chunk = await response.content.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return response.content.at_eof()

    def _result(
        self, response: aiohttp.ClientResponse, latency_ms: float, excerpt: bytes
    ) -> DeliveryResult:
        status = response.status
        outcome = classify_status(status)
        retry_after = None
        error = None
        if outcome == "retry":
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
        if 300 <= status < 400:
            location = response.headers.get("Location", "")[:200]
            error = f"redirect: {status} not followed (Location: {location})"
        elif outcome != "delivered":
            error = f"http: {status} {(response.reason or '')[:100]}".rstrip()
        return DeliveryResult(outcome, status, latency_ms, error, retry_after, excerpt)


_DELIVERED = DeliveryResult("delivered", 200, 0.0)


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request the fake sender received."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeWebhookSender:
    """In-memory :class:`WebhookSender` for unit tests.

    Records every request in ``sent`` and answers with ``answer(request)`` when ``answer`` is
    a function, else with the next result of ``answers``, and ``delivered`` (200) after those.
    """

    answers: Iterable[DeliveryResult] = ()
    answer: Callable[[SentRequest], DeliveryResult] | None = None
    sent: list[SentRequest] = field(default_factory=list)
    _queue: Iterator[DeliveryResult] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._queue = iter(self.answers)

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        request = SentRequest(url, body, dict(headers() if callable(headers) else headers))
        self.sent.append(request)
        if self.answer is not None:
            return self.answer(request)
        return next(self._queue, _DELIVERED)
