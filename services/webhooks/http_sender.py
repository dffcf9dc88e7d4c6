"""The webhook sender over HTTP: :class:`HttpWebhookSender`, the real adapter of the
:class:`services.webhooks.ports.WebhookSender` port, one per process, on the lean HTTP/1.1
client of :mod:`services.webhooks.http1`. Per request it

1. takes a slot for the endpoint's host and then one of the process-wide slots (host first,
   so a slow receiver queues its own deliveries without holding slots other hosts need);
2. resolves the host through the :class:`CachingResolver` and refuses the request if any
   address is not allowed by the :class:`WebhookRules` (a name rebound to an internal
   address after registration is refused here);
3. sends it with a 10 s budget for everything (connect, TLS, request, answer, body), no
   redirects followed, no cookies, no proxies from the environment, no decompression, and
   reads at most 1 KiB of the answer's body (the connection is closed rather than drained
   when there is more).

New connections are pinned and every socket is checked before ``connect()``: see
:mod:`services.webhooks.pinning`. A keep-alive connection serves only its own scheme, host
name and port, idles at most ``keepalive`` seconds, and a request that a reused connection
lost before any byte of the answer (the server had closed it) is sent once more on a new one.

A client of its own rather than aiohttp's: during a webhook flood on this project's 2-core box,
aiohttp's client code (``ClientSession._request``, ``ClientRequest``, its timers and header
handling) was ~38 % of the worker's CPU, about 0.1 ms per request, and deliveries reached
3,600-4,400/s while a bare aiohttp POST loop reached 8,000-9,600/s. The webhook path needs
none of what that code is for (redirects, cookies, proxies, multipart, encodings, per-phase
timeouts); the request here is one prepared ``bytes`` write and the answer is parsed by
llhttp (``httptools``). Measured the same way (``bench/webhooks.py`` with py-spy on the
worker, 2026-12-06, runs interleaved with the aiohttp version on the same noisy box): the
worker's CPU per delivery went from 0.30-0.38 ms to 0.19-0.29 ms, deliveries from
3,300-5,200/s to 3,800-9,100/s (0.62-0.90 x the bare aiohttp POST loop of the same run, from
0.41-0.65 x). httpx was measured earlier at 2.3-2.9 ms of CPU per request at 50 concurrent
requests (its pool rescans every connection on each request).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.webhooks.addresses import address_problem
from services.webhooks.host_slots import HostSlots
from services.webhooks.http1 import (
    Answer,
    Http1Error,
    Http1Pool,
    Origin,
    encode_request,
    request_start,
)
from services.webhooks.model import DeliveryResult
from services.webhooks.pinning import PinnedResolver, RefusedAddress, guarded_socket_factory
from services.webhooks.policy import Outcome, classify_status, parse_retry_after
from services.webhooks.ports import Headers
from services.webhooks.resolver import CachingResolver, ResolutionError
from services.webhooks.signing import USER_AGENT
from services.webhooks.url_parsing import WebhookURL, parse_webhook_url
from services.webhooks.url_rules import WebhookRules, WebhookURLError

# Sent unless the caller's headers have them (any case), as aiohttp did: a bytes body without
# a Content-Type was application/octet-stream. No Accept-Encoding: answers are not decoded.
_DEFAULT_HEADERS = (
    ("User-Agent", USER_AGENT),
    ("Accept", "*/*"),
    ("Content-Type", "application/octet-stream"),
)


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


class HttpWebhookSender:
    """The real :class:`WebhookSender`: one connection pool per process.

    Create it in the composition root and close it with :meth:`aclose` (or ``async with``);
    the pool itself is opened on the first :meth:`send`, inside the running loop.
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
        self._pool: Http1Pool | None = None
        self._hosts = HostSlots(config.max_per_host)
        self._all = asyncio.Semaphore(config.max_concurrency)
        # URL -> (checked URL, connection pool key, request line and Host header)
        self._targets: dict[str, tuple[WebhookURL, Origin, str]] = {}

    async def __aenter__(self) -> HttpWebhookSender:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (every connection, idle or in use)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()

    def _open(self) -> Http1Pool:
        return Http1Pool(
            pick=PinnedResolver(self._cache, self._rules, self._rand).pick,
            socket_factory=guarded_socket_factory(self._rules),
            ssl_context=self._ssl,
            keepalive=self._config.keepalive,
            max_idle_per_origin=self._config.max_per_host,
            max_idle=self._config.max_concurrency,
            max_body=self._config.max_response_bytes,
        )

    def _target(self, url: str) -> tuple[WebhookURL, Origin, str]:
        cached = self._targets.get(url)
        if cached is None:
            target = parse_webhook_url(url, self._rules)
            # The request goes exactly where the checked URL points: built from its parts.
            origin = Origin(target.scheme, target.host, target.port)
            if len(self._targets) >= 10_000:
                self._targets.clear()
            cached = self._targets[url] = (
                target,
                origin,
                request_start("POST", target.target, origin),
            )
        return cached

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        """POST ``body`` to ``url``; see the module documentation for the steps and checks."""
        try:
            target = self._target(url)
        except WebhookURLError as exc:
            return DeliveryResult("failed", None, 0.0, f"{exc.code}: {exc.reason}")
        pool = self._pool
        if pool is None:
            pool = self._pool = self._open()
        host = target[0].host
        slot = self._hosts.acquire(host)
        try:
            async with slot.semaphore, self._all:
                return await self._attempt(pool, target, body, headers)
        finally:
            self._hosts.release(host, slot)

    async def _attempt(
        self,
        pool: Http1Pool,
        target: tuple[WebhookURL, Origin, str],
        body: bytes,
        headers: Headers,
    ) -> DeliveryResult:
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self._config.timeout
        url, origin, start = target
        request = encode_request(
            start, headers() if callable(headers) else headers, body, _DEFAULT_HEADERS
        )

        def failure(outcome: Outcome, error: str) -> DeliveryResult:
            return DeliveryResult(outcome, None, (time.perf_counter() - started) * 1000, error)

        answer = Answer()
        try:
            async with asyncio.timeout_at(deadline):
                if url.ip is None:
                    for address in await self._cache.resolve(url.host):
                        problem = address_problem(address, self._rules)
                        if problem:
                            return failure(
                                "failed",
                                f"address_not_allowed: {url.host} resolves to {address}, {problem}",
                            )
                await pool.request(origin, request, answer)
        except TimeoutError:
            # The answer's status stands even if its body is slow: the body is only logged.
            if answer.status is None:
                return failure("retry", f"timeout: no answer within {self._config.timeout:g} s")
        except RefusedAddress as exc:
            return failure("failed", f"address_not_allowed: {exc}")
        except ResolutionError as exc:
            return failure("retry", f"dns: {exc}")
        except ssl.SSLError as exc:  # certificate verification failures included
            return failure("retry", f"tls: {exc}"[:500])
        except (Http1Error, OSError) as exc:
            return failure("retry", f"{type(exc).__name__}: {exc}"[:500])
        latency_ms = (time.perf_counter() - started) * 1000
        return self._result(answer, latency_ms)

    def _result(self, answer: Answer, latency_ms: float) -> DeliveryResult:
        status = answer.status
        assert status is not None
        outcome = classify_status(status)
        retry_after = None
        error = None
        if outcome == "retry":
            retry_after = parse_retry_after(answer.header("Retry-After"), now=self._clock())
        if 300 <= status < 400:
            location = (answer.header("Location") or "")[:200]
            error = f"redirect: {status} not followed (Location: {location})"
        elif outcome != "delivered":
            error = f"http: {status} {answer.reason[:100]}".rstrip()
        return DeliveryResult(outcome, status, latency_ms, error, retry_after, bytes(answer.body))
