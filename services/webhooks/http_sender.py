"""The webhook sender over HTTP: :class:`HttpWebhookSender` (aiohttp), the real adapter of the
:class:`services.webhooks.ports.WebhookSender` port, one per process. Per request it

1. takes a slot for the endpoint's host and then one of the process-wide slots (host first,
   so a slow receiver queues its own deliveries without holding slots other hosts need);
2. resolves the host through the :class:`CachingResolver` and refuses the request if any
   address is not allowed by the :class:`WebhookRules` (a name rebound to an internal
   address after registration is refused here);
3. sends it with a 10 s budget for everything (connect, TLS, request, answer, body), no
   redirects followed, no cookies, no proxies from the environment, and reads at most 1 KiB
   of the answer's body (the connection is closed rather than drained when there is more).

New connections are pinned and every socket is checked before ``connect()``: see
:mod:`services.webhooks.pinning`.

aiohttp rather than httpx: measured on this project's 2-core box against a local receiver,
httpx 0.28 / httpcore 1.0 cost 2.3-2.9 ms of CPU per request at 50 concurrent requests
(its pool rescans every connection on each request, and without ``sniffio`` installed
httpcore retries that import on every request), aiohttp 0.13 ms (0.16-0.24 ms for a whole
delivery through this class, JSON and signature included). aiohttp, yarl and aiohappyeyeballs
come with faust-streaming.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import yarl

from services.webhooks.addresses import address_problem
from services.webhooks.host_slots import HostSlots
from services.webhooks.model import DeliveryResult
from services.webhooks.pinning import (
    PinnedResolver,
    RefusedAddress,
    guarded_socket_factory,
    refusal,
)
from services.webhooks.policy import Outcome, classify_status, parse_retry_after
from services.webhooks.ports import Headers
from services.webhooks.resolver import CachingResolver, ResolutionError
from services.webhooks.signing import USER_AGENT
from services.webhooks.url_parsing import WebhookURL, parse_webhook_url
from services.webhooks.url_rules import WebhookRules, WebhookURLError


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
        self._hosts = HostSlots(config.max_per_host)
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
            resolver=PinnedResolver(self._cache, self._rules, self._rand),
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
            refused = refusal(exc)
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
