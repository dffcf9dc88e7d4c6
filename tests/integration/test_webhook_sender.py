"""The HTTP webhook sender against a real local receiver (127.0.0.1 only, no other network).

The receiver is a small asyncio HTTP/1.1 server started once for the module; each path
behaves differently (``/ok``, ``/status/<code>``, ``/redirect``, ``/huge``, ``/slow``,
``/hold``, ``/drop``). Host names resolve through a fake DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
from standardwebhooks import Webhook

from services.platform.events import DataPoint, dumps
from services.webhooks import (
    CachingResolver,
    HttpWebhookSender,
    RefusedAddress,
    ResolutionError,
    SenderConfig,
    WebhookRules,
    generate_secret,
    message_id,
    parse_cidrs,
    signed_headers,
    validate_webhook_url,
)
from services.webhooks.pinning import PinnedResolver as _PinnedResolver
from services.webhooks.pinning import guarded_socket_factory
from services.webhooks.resolver import ResolveFn
from services.webhooks.url_rules import IPAddress

LOOPBACK_OK = WebhookRules(allow_http=True, allowed_cidrs=parse_cidrs(["127.0.0.0/8"]))
HUGE_BYTES = 256 * 1024 * 1024


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    huge_sent: int = 0
    huge_finished: asyncio.Event = field(default_factory=asyncio.Event)
    sni: list[str | None] = field(default_factory=list)

    def reset(self) -> None:
        self.requests.clear()
        self.connections = self.in_flight = self.max_in_flight = self.huge_sent = 0
        self.huge_finished = asyncio.Event()
        self.sni.clear()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _version = line.split(" ", 2)
                headers = {}
                for h in lines:
                    if h:
                        name, _, value = h.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Seen(method, urlsplit(target).path, headers, body))
                if not await self.answer(target, writer):
                    return
        finally:
            writer.close()

    async def answer(self, target: str, writer: asyncio.StreamWriter) -> bool:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/ok":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        elif path.startswith("/status/"):
            code = int(path.removeprefix("/status/"))
            extra = ""
            if "retry_after" in query:
                extra += f"retry-after: {query['retry_after']}\r\n"
            if "date_in" in query:
                date = formatdate(time.time() + float(query["date_in"]), usegmt=True)
                extra += f"retry-after: {date}\r\n"
            text = b"" if code in (204, 304) else f"status {code}".encode()
            writer.write(
                f"HTTP/1.1 {code} X\r\ncontent-length: {len(text)}\r\n{extra}\r\n".encode() + text
            )
        elif path == "/redirect":
            writer.write(b"HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\n\r\n")
        elif path == "/huge":
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {HUGE_BYTES}\r\n\r\n".encode())
            chunk = b"x" * 65536
            try:
                while self.huge_sent < HUGE_BYTES:
                    writer.write(chunk)
                    await writer.drain()
                    self.huge_sent += len(chunk)
            except ConnectionError:
                return False
            finally:
                self.huge_finished.set()
        elif path == "/slow":
            await asyncio.sleep(3)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        elif path == "/hold":
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            await asyncio.sleep(0.05)
            self.in_flight -= 1
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif path == "/drop":
            return False
        elif path in ("/stall-body", "/cut-body"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst part")
            await writer.drain()
            if path == "/stall-body":
                await asyncio.sleep(3)
            return False
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        try:
            await writer.drain()
        except ConnectionError:
            return False
        return True


@pytest_asyncio.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


@pytest.fixture
def rx(receiver: Receiver) -> Receiver:
    receiver.reset()
    return receiver


class FakeDNS:
    def __init__(self, records: dict[str, Sequence[str]]) -> None:
        self.records = dict(records)
        self.calls: list[str] = []

    async def __call__(self, host: str) -> tuple[IPAddress, ...]:
        self.calls.append(host)
        if host not in self.records:
            raise ResolutionError(f"{host}: Name or service not known")
        return tuple(ipaddress.ip_address(a) for a in self.records[host])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sender_for(
    rules: WebhookRules = LOOPBACK_OK,
    dns: ResolveFn | None = None,
    *,
    resolver: CachingResolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    max_per_host: int = 32,
    max_concurrency: int = 512,
) -> HttpWebhookSender:
    if resolver is None and dns is not None:
        resolver = CachingResolver(dns)
    return HttpWebhookSender(
        rules=rules,
        resolver=resolver,
        config=SenderConfig(
            timeout=timeout, max_per_host=max_per_host, max_concurrency=max_concurrency
        ),
        ssl_context=ssl_context,
    )


POINT = DataPoint("1A2B3C", 1_700_000_000, "temperature", 23.1, "°C")
BODY = dumps(POINT.to_dict())


def headers_for(secret: str, point: DataPoint = POINT, webhook_id: int = 1) -> dict[str, str]:
    msg = message_id(
        webhook_id=webhook_id, device=point.device, metric=point.metric, time=point.time
    )
    return signed_headers(secret=secret, msg_id=msg, body=dumps(point.to_dict()))


# --- delivery ----------------------------------------------------------------------------


async def test_delivers_a_verifiable_signed_data_point(rx: Receiver) -> None:
    secret = generate_secret()
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}/ok", BODY, headers_for(secret))
    assert result.outcome == "delivered"
    assert result.status == 200
    assert result.error is None
    assert result.response_body == b"ok"
    assert result.latency_ms > 0
    [seen] = rx.requests
    assert (seen.method, seen.path, seen.body) == ("POST", "/ok", BODY)
    assert seen.headers["host"] == f"127.0.0.1:{rx.port}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"].startswith("hivepipe-webhooks/")
    assert "cookie" not in seen.headers
    assert Webhook(secret).verify(seen.body, seen.headers) == {
        "device": "1A2B3C",
        "time": 1_700_000_000,
        "metric": "temperature",
        "value": 23.1,
        "unit": "°C",
    }


async def test_headers_may_be_signed_when_the_slot_is_free(rx: Receiver) -> None:
    secret = generate_secret()
    calls: list[float] = []

    def sign_now() -> dict[str, str]:
        calls.append(time.time())
        return headers_for(secret)

    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}/ok", BODY, sign_now)
    assert result.outcome == "delivered"
    assert len(calls) == 1
    [seen] = rx.requests
    assert Webhook(secret).verify(seen.body, seen.headers)["metric"] == "temperature"


async def test_reuses_connections(rx: Receiver) -> None:
    async with sender_for() as sender:
        for _ in range(5):
            result = await sender.send(f"http://127.0.0.1:{rx.port}/ok", BODY, {})
            assert result.outcome == "delivered"
    assert len(rx.requests) == 5
    assert rx.connections == 1


async def test_redirect_is_a_failure_and_not_followed(rx: Receiver) -> None:
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}/redirect", BODY, {})
    assert result.outcome == "failed"
    assert result.status == 302
    assert result.error is not None
    assert "not followed" in result.error
    assert "/ok" in result.error
    assert rx.paths() == ["/redirect"]


async def test_huge_answer_is_not_read(rx: Receiver) -> None:
    started = time.perf_counter()
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}/huge", BODY, {})
    took = time.perf_counter() - started
    assert result.outcome == "delivered"
    assert result.response_body == b"x" * 1024
    assert took < 3
    await asyncio.wait_for(rx.huge_finished.wait(), 5)
    # The server stopped when the connection was closed, far from its 256 MiB.
    print(f"\nhuge answer: {rx.huge_sent} bytes written by the server before the close")
    assert rx.huge_sent < 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("path", "outcome", "retry_after"),
    [
        ("/status/500", "retry", None),
        ("/status/502", "retry", None),
        ("/status/503?retry_after=120", "retry", 120.0),
        ("/status/429?retry_after=7", "retry", 7.0),
        ("/status/408", "retry", None),
        ("/status/410", "gone", None),
        ("/status/404", "failed", None),
        ("/status/400", "failed", None),
        ("/status/401", "failed", None),
        ("/status/429?retry_after=soon", "retry", None),
        ("/status/200", "delivered", None),
        ("/status/204", "delivered", None),
    ],
)
async def test_status_classes(
    rx: Receiver, path: str, outcome: str, retry_after: float | None
) -> None:
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}{path}", BODY, {})
    assert result.outcome == outcome
    assert result.status == int(path.split("/")[2].split("?")[0])
    assert result.retry_after == retry_after
    if outcome != "delivered":
        assert result.error is not None
        assert str(result.status) in result.error


async def test_retry_after_as_http_date(rx: Receiver) -> None:
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}/status/503?date_in=90", BODY, {})
    assert result.outcome == "retry"
    assert result.retry_after is not None
    assert 85 <= result.retry_after <= 91


async def test_timeout_is_a_retry(rx: Receiver) -> None:
    started = time.perf_counter()
    async with sender_for(timeout=0.3) as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}/slow", BODY, {})
    assert result.outcome == "retry"
    assert result.status is None
    assert result.error is not None
    assert "timeout" in result.error
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("path", ["/stall-body", "/cut-body"])
async def test_status_stands_when_the_body_is_slow_or_cut(rx: Receiver, path: str) -> None:
    started = time.perf_counter()
    async with sender_for(timeout=0.5) as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}{path}", BODY, {})
    assert result.outcome == "delivered"
    assert result.status == 200
    assert result.response_body == b"first part"
    assert time.perf_counter() - started < 2


async def test_connection_refused_is_a_retry() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{port}/ok", BODY, {})
    assert result.outcome == "retry"
    assert result.status is None
    assert result.error


async def test_connection_closed_without_answer_is_a_retry(rx: Receiver) -> None:
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{rx.port}/drop", BODY, {})
    assert result.outcome == "retry"
    assert result.status is None


async def test_refused_urls_fail_without_traffic(rx: Receiver) -> None:
    async with sender_for(WebhookRules(allow_http=True)) as sender:
        for url in (
            f"http://127.0.0.1:{rx.port}/ok",
            f"http://[::ffff:127.0.0.1]:{rx.port}/ok",
            f"http://2130706433:{rx.port}/ok",
            f"http://user:pw@127.0.0.1:{rx.port}/ok",
            "https://169.254.169.254/latest/meta-data/",
        ):
            result = await sender.send(url, BODY, {})
            assert result.outcome == "failed", url
            assert result.status is None
    assert rx.requests == []


# --- pinning and DNS rebinding -------------------------------------------------------------


async def test_name_rebound_to_loopback_after_registration_is_refused(rx: Receiver) -> None:
    rules = WebhookRules(allow_http=True)  # loopback is not allowed
    dns = FakeDNS({"hooks.example.com": ["93.184.216.34"]})
    clock = Clock()
    resolver = CachingResolver(dns, ttl=60, clock=clock)
    url = f"http://hooks.example.com:{rx.port}/ok"
    # Registration: the name resolves to a public address, accepted.
    await validate_webhook_url(url, rules=rules, resolve=resolver.resolve)

    dns.records["hooks.example.com"] = ["127.0.0.1"]  # the attacker rebinds the name
    clock.now += 61
    async with sender_for(rules, resolver=resolver) as sender:
        result = await sender.send(url, BODY, {})
    assert result.outcome == "failed"
    assert result.error is not None
    assert "127.0.0.1" in result.error
    assert "loopback" in result.error
    assert rx.requests == []


async def test_rebinding_between_check_and_connect_is_refused_at_connect(rx: Receiver) -> None:
    # A zero TTL makes every resolve a fresh lookup: the pre-check sees a public address,
    # the connection's own pick sees loopback; the connect-time check must catch it.
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    dns = FakeDNS({})

    async def flipping(host: str) -> tuple[IPAddress, ...]:
        dns.records[host] = next(answers)
        return await dns(host)

    rules = WebhookRules(allow_http=True)
    async with sender_for(rules, resolver=CachingResolver(flipping, ttl=0)) as sender:
        result = await sender.send(f"http://hooks.example.com:{rx.port}/ok", BODY, {})
    assert dns.calls == ["hooks.example.com", "hooks.example.com"]
    assert result.outcome == "failed"
    assert result.error is not None
    assert "address_not_allowed: 127.0.0.1 is a loopback address" in result.error
    assert rx.requests == []


async def test_connects_to_the_cached_address_with_the_original_host_header(
    rx: Receiver,
) -> None:
    # "hooks.test" exists only in the fake DNS: the request can only arrive through the pin.
    dns = FakeDNS({"hooks.test": ["127.0.0.1"]})
    async with sender_for(LOOPBACK_OK, dns) as sender:
        for _ in range(3):
            result = await sender.send(f"http://hooks.test:{rx.port}/ok", BODY, {})
            assert result.outcome == "delivered"
    assert dns.calls == ["hooks.test"]
    assert [r.headers["host"] for r in rx.requests] == [f"hooks.test:{rx.port}"] * 3


async def test_unresolvable_name_is_a_retry(rx: Receiver) -> None:
    async with sender_for(LOOPBACK_OK, FakeDNS({})) as sender:
        result = await sender.send(f"http://nowhere.test:{rx.port}/ok", BODY, {})
    assert result.outcome == "retry"
    assert result.error is not None
    assert result.error.startswith("dns:")


async def test_mixed_answer_with_one_internal_address_is_refused(rx: Receiver) -> None:
    dns = FakeDNS({"hooks.test": ["93.184.216.34", "10.0.0.1"]})
    async with sender_for(WebhookRules(allow_http=True), dns) as sender:
        result = await sender.send(f"http://hooks.test:{rx.port}/ok", BODY, {})
    assert result.outcome == "failed"
    assert result.error is not None
    assert "10.0.0.1" in result.error


async def test_pinned_resolver_picks_among_cached_addresses_and_checks() -> None:
    import random

    dns = FakeDNS({"multi.test": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "bad.test": ["10.1.1.1"]})
    cache = CachingResolver(dns)
    pinned = _PinnedResolver(cache, LOOPBACK_OK, random.Random(4))
    picked = {await pinned.pick("multi.test") for _ in range(40)}
    assert picked == {ipaddress.ip_address(f"127.0.0.{i}") for i in (1, 2, 3)}
    assert dns.calls == ["multi.test"]
    with pytest.raises(RefusedAddress, match="10.1.1.1 is a private address"):
        await pinned.pick("bad.test")


def test_socket_factory_refuses_forbidden_addresses() -> None:
    factory = guarded_socket_factory(WebhookRules(allowed_cidrs=parse_cidrs(["10.0.0.0/8"])))
    tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    for sockaddr, family in (
        (("127.0.0.1", 80), socket.AF_INET),
        (("169.254.169.254", 80), socket.AF_INET),
        (("::ffff:10.0.0.1", 80, 0, 0), socket.AF_INET6),
        (("fe80::1", 80, 0, 2), socket.AF_INET6),
    ):
        with pytest.raises(RefusedAddress):
            factory((family, *tcp, sockaddr))
    for sockaddr, family in (
        (("10.1.2.3", 80), socket.AF_INET),
        (("1.1.1.1", 443), socket.AF_INET),
    ):
        factory((family, *tcp, sockaddr)).close()


# --- concurrency ---------------------------------------------------------------------------


async def test_per_host_limit(rx: Receiver) -> None:
    async with sender_for(max_per_host=2, max_concurrency=50) as sender:
        results = await asyncio.gather(
            *(sender.send(f"http://127.0.0.1:{rx.port}/hold", BODY, {}) for _ in range(10))
        )
    assert {r.outcome for r in results} == {"delivered"}
    assert rx.max_in_flight == 2
    assert len(sender._hosts) == 0  # per-host semaphores are dropped once idle


async def test_overall_limit_across_hosts(rx: Receiver) -> None:
    dns = FakeDNS({f"h{i}.test": ["127.0.0.1"] for i in range(4)})
    async with sender_for(LOOPBACK_OK, dns, max_per_host=10, max_concurrency=3) as sender:
        results = await asyncio.gather(
            *(sender.send(f"http://h{i % 4}.test:{rx.port}/hold", BODY, {}) for i in range(16))
        )
    assert {r.outcome for r in results} == {"delivered"}
    assert rx.max_in_flight == 3


async def test_many_concurrent_deliveries(rx: Receiver) -> None:
    secret = generate_secret()
    points = [
        DataPoint("1A2B3C", 1_700_000_000 + i, "temperature", 20.0, "°C") for i in range(2000)
    ]
    async with sender_for(max_per_host=64, max_concurrency=256) as sender:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                sender.send(
                    f"http://127.0.0.1:{rx.port}/ok", dumps(p.to_dict()), headers_for(secret, p)
                )
                for p in points
            )
        )
        took = time.perf_counter() - started
    assert [r.outcome for r in results] == ["delivered"] * 2000
    assert len({r.headers["webhook-id"] for r in rx.requests}) == 2000
    assert rx.connections <= 64
    print(f"\n2000 deliveries in {took:.2f} s ({2000 / took:.0f}/s, receiver in-process)")


# --- TLS: SNI and certificate checked for the host name, connection pinned -----------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=hooks.example.test",
            "-addext", "subjectAltName=DNS:hooks.example.test",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest_asyncio.fixture
async def tls_receiver(certificate: tuple[Path, Path]) -> AsyncIterator[Receiver]:
    cert, key = certificate
    state = Receiver()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        state.sni.append(name)

    context.sni_callback = remember_sni
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


async def test_https_to_a_pinned_address_verifies_the_host_name(
    tls_receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    client_tls = ssl.create_default_context(cafile=str(certificate[0]))
    dns = FakeDNS({"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    rules = WebhookRules(allowed_cidrs=parse_cidrs(["127.0.0.0/8"]))  # https only
    secret = generate_secret()
    async with sender_for(rules, dns, ssl_context=client_tls) as sender:
        good = await sender.send(
            f"https://hooks.example.test:{tls_receiver.port}/ok", BODY, headers_for(secret)
        )
        # Same address, a name the certificate does not cover: refused by verification.
        wrong = await sender.send(f"https://other.example.test:{tls_receiver.port}/ok", BODY, {})
        plain = await sender.send(f"http://hooks.example.test:{tls_receiver.port}/ok", BODY, {})
    assert good.outcome == "delivered", good.error
    [seen] = tls_receiver.requests
    assert seen.headers["host"] == f"hooks.example.test:{tls_receiver.port}"
    assert Webhook(secret).verify(seen.body, seen.headers)["device"] == "1A2B3C"
    assert tls_receiver.sni[0] == "hooks.example.test"
    assert "other.example.test" in tls_receiver.sni
    assert wrong.outcome == "retry"
    assert wrong.error is not None
    assert wrong.error.startswith("tls:")
    assert "other.example.test" in wrong.error or "match" in wrong.error
    assert plain.outcome == "failed"  # http is not allowed by these rules
    assert len(tls_receiver.requests) == 1
