"""The webhook sender's own HTTP/1.1 client (:mod:`services.webhooks.http1`) against a scripted
local server (127.0.0.1 only): answer framing, when a connection is reused and when it is not,
the one retry of a request lost by a stale keep-alive connection, idle expiry, and the bytes
of the request on the wire.

Each test sets ``server.answer(conn, n, request)``: the bytes to write for the ``n``-th request
(from 0) on connection ``conn`` (from 0), and whether to keep the connection open after them.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest
import pytest_asyncio

from services.webhooks import (
    CachingResolver,
    HttpWebhookSender,
    SenderConfig,
    WebhookRules,
    parse_cidrs,
)
from services.webhooks.http1 import (
    AddrInfo,
    Answer,
    Http1Pool,
    Origin,
    encode_request,
    request_start,
)
from services.webhooks.http_sender import _DEFAULT_HEADERS
from services.webhooks.pinning import RefusedAddress, guarded_socket_factory
from services.webhooks.url_parsing import parse_webhook_url

LOOPBACK_OK = WebhookRules(allow_http=True, allowed_cidrs=parse_cidrs(["127.0.0.0/8"]))
BODY = b'{"device":"1A2B3C","time":1700000000,"metric":"temperature","value":23.1,"unit":null}'
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

#: (connection number, request number on it, the request's head and body) -> (bytes, keep open)
AnswerFn = Callable[[int, int, bytes], tuple[bytes, bool]]
RESET = b"<reset>"  # answer with a TCP reset instead of bytes


@dataclass
class Server:
    port: int = 0
    answer: AnswerFn = lambda _c, _n, _r: (OK, True)  # noqa: E731
    requests: list[tuple[int, bytes]] = field(default_factory=list)  # (connection, request)
    connections: int = 0
    closed_by_client: list[int] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        n = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        self.closed_by_client.append(conn)
                    return
                except ConnectionError:
                    self.closed_by_client.append(conn)
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append((conn, request))
                data, keep = self.answer(conn, n, request)
                n += 1
                if data == RESET:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
                if not keep:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()


@pytest_asyncio.fixture(scope="module")
async def scripted() -> AsyncIterator[Server]:
    state = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await state.handle(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


@pytest.fixture
def server(scripted: Server) -> Server:
    scripted.answer = lambda _c, _n, _r: (OK, True)
    scripted.requests.clear()
    scripted.connections = 0
    scripted.closed_by_client.clear()
    return scripted


async def loopback(_host: str) -> tuple[IPv4Address, ...]:
    """A fake DNS: every name is 127.0.0.1."""
    return (IPv4Address("127.0.0.1"),)


def sender_for(*, keepalive: float = 4.0, timeout: float = 10.0) -> HttpWebhookSender:
    return HttpWebhookSender(
        rules=LOOPBACK_OK, config=SenderConfig(keepalive=keepalive, timeout=timeout)
    )


async def settle() -> None:
    """Let the server's side see closes and EOFs."""
    for _ in range(5):
        await asyncio.sleep(0.01)


# --- answer framing and reuse --------------------------------------------------------------


async def test_chunked_answer_is_read_and_the_connection_reused(server: Server) -> None:
    server.answer = lambda _c, _n, _r: (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        True,
    )
    async with sender_for() as sender:
        first = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        second = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
    assert (first.outcome, first.status, first.response_body) == ("delivered", 200, b"hello world")
    assert second.response_body == b"hello world"
    assert server.connections == 1


async def test_connection_close_answer_is_not_reused(server: Server) -> None:
    # The server keeps its side open: only the header says the connection is done.
    server.answer = lambda _c, _n, _r: (
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        True,
    )
    async with sender_for() as sender:
        for _ in range(3):
            result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
            assert (result.outcome, result.response_body) == ("delivered", b"ok")
        await settle()
        assert sender._pool is not None
        assert sender._pool.connections == 0
    assert server.connections == 3
    assert sorted(server.closed_by_client) == [0, 1, 2]


@pytest.mark.parametrize(
    ("head", "reused"),
    [
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\n", True),
    ],
)
async def test_http_1_0_answer_is_reused_only_with_keep_alive(
    server: Server, head: bytes, reused: bool
) -> None:
    server.answer = lambda _c, _n, _r: (head + b"ok", True)
    async with sender_for() as sender:
        for _ in range(2):
            result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
            assert (result.outcome, result.status, result.response_body) == (
                "delivered",
                200,
                b"ok",
            )
    assert server.connections == (1 if reused else 2)


async def test_body_read_until_the_close_is_kept_and_the_connection_not_reused(
    server: Server,
) -> None:
    server.answer = lambda _c, _n, _r: (b"HTTP/1.1 202 Accepted\r\n\r\nqueued", False)
    async with sender_for() as sender:
        for _ in range(2):
            result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
            assert (result.outcome, result.status, result.response_body) == (
                "delivered",
                202,
                b"queued",
            )
    assert server.connections == 2


@pytest.mark.parametrize(
    ("body", "chunked", "reused"),
    [
        (b"x" * 1024, False, True),
        (b"x" * 1025, False, False),
        (b"x" * 5000, False, False),
        (b"x" * 1024, True, True),
        (b"x" * 3000, True, False),
    ],
)
async def test_body_longer_than_1_kib_closes_the_connection(
    server: Server, body: bytes, chunked: bool, reused: bool
) -> None:
    if chunked:
        wire = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 700]), body[i : i + 700])
            for i in range(0, len(body), 700)
        )
        answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + wire + b"0\r\n\r\n"
    else:
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    server.answer = lambda _c, _n, _r: (answer, True)
    async with sender_for() as sender:
        for _ in range(2):
            result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
            assert (result.outcome, result.response_body) == ("delivered", b"x" * 1024)
        await settle()
    assert server.connections == (1 if reused else 2)
    if not reused:
        assert 0 in server.closed_by_client  # closed by the client, not drained


async def test_interim_answers_are_skipped(server: Server) -> None:
    server.answer = lambda _c, _n, _r: (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone",
        True,
    )
    async with sender_for() as sender:
        for _ in range(2):
            result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
            assert (result.outcome, result.status, result.response_body) == (
                "delivered",
                201,
                b"done",
            )
    assert server.connections == 1


async def test_switching_protocols_is_a_failure_and_the_connection_closed(server: Server) -> None:
    server.answer = lambda _c, _n, _r: (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        b"\x81\x05hello",
        True,
    )
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        await settle()
        assert sender._pool is not None
        assert sender._pool.connections == 0
    assert (result.outcome, result.status) == ("failed", 101)
    assert server.closed_by_client == [0]


async def test_unreadable_answer_is_a_retry(server: Server) -> None:
    server.answer = lambda _c, _n, _r: (b"SPDY/3 200 OK\r\n\r\n", True)
    async with sender_for() as sender:
        result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
    assert (result.outcome, result.status) == ("retry", None)
    assert result.error is not None
    assert result.error.startswith("BadAnswer: unreadable answer")


async def test_bytes_sent_while_idle_drop_the_connection(server: Server) -> None:
    # An answer followed by junk (a second answer to one request): the next request must not
    # read the junk as its answer.
    server.answer = lambda _c, _n, _r: (
        OK + b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n",
        True,
    )
    async with sender_for() as sender:
        for _ in range(2):
            result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
            assert (result.outcome, result.status) == ("delivered", 200)
    assert server.connections == 2


# --- stale keep-alive connections ----------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_request_lost_by_a_stale_connection_is_sent_once_more(
    server: Server, how: str
) -> None:
    # The server answers the first request, then drops the connection when the second comes
    # (its idle timeout crossing the request): no byte of an answer, so send it again.
    def answer(conn: int, n: int, _request: bytes) -> tuple[bytes, bool]:
        if conn == 0 and n == 1:
            return (RESET, False) if how == "reset" else (b"", False)
        return OK, True

    server.answer = answer
    async with sender_for() as sender:
        first = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {"webhook-id": "1"})
        second = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {"webhook-id": "2"})
    assert (first.outcome, second.outcome) == ("delivered", "delivered")
    assert [(conn, b"webhook-id: 2" in r) for conn, r in server.requests] == [
        (0, False),
        (0, True),
        (1, True),
    ]


async def test_a_stale_retry_happens_once_and_a_new_connection_is_not_retried(
    server: Server,
) -> None:
    # Every request after the first on any connection, and every request on a new connection
    # after the first one, is dropped without an answer.
    server.answer = lambda conn, n, _r: (OK, True) if conn == 0 and n == 0 else (b"", False)
    async with sender_for() as sender:
        first = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        second = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        third = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
    assert first.outcome == "delivered"
    assert (second.outcome, second.status) == ("retry", None)
    assert second.error is not None
    assert second.error.startswith("ServerDisconnected:")
    assert (third.outcome, third.status) == ("retry", None)
    # first; second on the reused connection, then once on a new one; third on a new one.
    assert [conn for conn, _ in server.requests] == [0, 0, 1, 2]


async def test_an_idle_connection_closed_by_the_server_is_not_used(server: Server) -> None:
    server.answer = lambda _c, _n, _r: (OK, False)  # answers, then closes (no header says so)
    async with sender_for() as sender:
        await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        await settle()
        assert sender._pool is not None
        assert sender._pool.connections == 0
        result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
    assert result.outcome == "delivered"
    assert [conn for conn, _ in server.requests] == [0, 1]


# --- idle expiry and closing ---------------------------------------------------------------


async def test_idle_connections_expire_after_keepalive(server: Server) -> None:
    async with sender_for(keepalive=0.2) as sender:
        await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        assert server.connections == 1
        await asyncio.sleep(0.35)
        await settle()
        # Closed by the client's sweep, without another request.
        assert server.closed_by_client == [0]
        assert sender._pool is not None
        assert sender._pool.connections == 0
        assert sender._pool.idle_connections == 0
        await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
    assert server.connections == 2


async def test_expired_connection_is_not_reused_before_the_sweep(server: Server) -> None:
    async with sender_for(keepalive=0.2) as sender:
        await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        assert sender._pool is not None
        sweeper = sender._pool._sweeper
        assert sweeper is not None
        sweeper.cancel()  # no sweep: the take itself must see the age
        await asyncio.sleep(0.3)
        await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
    assert server.connections == 2


async def test_aclose_closes_every_pooled_connection(server: Server) -> None:
    names = [f"h{i}.test" for i in range(3)]
    sender = HttpWebhookSender(rules=LOOPBACK_OK, resolver=CachingResolver(loopback))
    results = await asyncio.gather(
        *(sender.send(f"http://{h}:{server.port}/a", BODY, {}) for h in names for _ in range(2))
    )
    assert {r.outcome for r in results} == {"delivered"}
    assert sender._pool is not None
    pool = sender._pool
    assert pool.connections == server.connections >= 3  # one per name at least
    await sender.aclose()
    assert pool.connections == 0
    await settle()
    assert sorted(server.closed_by_client) == list(range(server.connections))
    # Usable again after aclose: a new pool.
    result = await sender.send(f"http://h0.test:{server.port}/a", BODY, {})
    await sender.aclose()
    assert result.outcome == "delivered"


async def test_aclose_fails_requests_in_flight_and_opens_nothing_after(server: Server) -> None:
    # The first request is answered; the second waits on the reused connection when the pool
    # is closed: it must not be sent again on a new connection of the closed pool.
    server.answer = lambda _c, n, _r: (OK, True) if n == 0 else (b"", True)
    sender = sender_for()
    first = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
    assert sender._pool is not None
    pool = sender._pool
    pending = asyncio.ensure_future(sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {}))
    while len(server.requests) < 2:
        await asyncio.sleep(0.01)
    await sender.aclose()
    second = await pending
    await settle()
    assert first.outcome == "delivered"
    assert (second.outcome, second.status) == ("retry", None)
    assert second.error is not None
    assert second.error.startswith("PoolClosed:")
    assert pool.connections == 0
    assert server.connections == 1
    assert server.closed_by_client == [0]


async def test_one_connection_per_host_name_even_on_one_address(server: Server) -> None:
    async with HttpWebhookSender(rules=LOOPBACK_OK, resolver=CachingResolver(loopback)) as sender:
        for host in ("a.test", "b.test", "a.test", "b.test"):
            result = await sender.send(f"http://{host}:{server.port}/x", BODY, {})
            assert result.outcome == "delivered"
    hosts = [
        (conn, next(h for h in r.split(b"\r\n") if h.startswith(b"Host:")))
        for conn, r in server.requests
    ]
    port = str(server.port).encode()
    assert hosts == [
        (0, b"Host: a.test:" + port),
        (1, b"Host: b.test:" + port),
        (0, b"Host: a.test:" + port),
        (1, b"Host: b.test:" + port),
    ]


async def test_timeout_closes_the_connection_and_keeps_nothing_running(server: Server) -> None:
    server.answer = lambda _c, _n, _r: (b"", True)  # never answers
    before = asyncio.all_tasks()
    async with sender_for(timeout=0.2) as sender:
        result = await sender.send(f"http://127.0.0.1:{server.port}/a", BODY, {})
        await settle()
        assert sender._pool is not None
        assert sender._pool.connections == 0
    assert (result.outcome, result.error) == ("retry", "timeout: no answer within 0.2 s")
    assert server.closed_by_client == [0]
    assert asyncio.all_tasks() - before == set()


async def test_every_new_connection_is_made_by_the_socket_factory(server: Server) -> None:
    # Whatever ``pick`` returns, the socket factory sees the address last and may refuse it.
    made: list[AddrInfo] = []
    guarded = guarded_socket_factory(WebhookRules())  # loopback not allowed

    def factory(info: AddrInfo) -> socket.socket:
        made.append(info)
        return guarded(info)

    async def pick(_host: str) -> IPv4Address:
        return IPv4Address("127.0.0.1")

    pool = Http1Pool(pick=pick, socket_factory=factory, ssl_context=ssl.create_default_context())
    origin = Origin("http", "hooks.test", server.port)
    with pytest.raises(RefusedAddress, match="127.0.0.1 is a loopback address"):
        await pool.request(origin, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Answer())
    await pool.aclose()
    assert [(family, sockaddr) for family, _t, _p, _c, sockaddr in made] == [
        (socket.AF_INET, ("127.0.0.1", server.port))
    ]
    assert server.connections == 0


# --- the request on the wire ---------------------------------------------------------------


async def test_request_bytes(server: Server) -> None:
    signed = {
        "content-type": "application/json",
        "user-agent": "hivepipe-webhooks/1",
        "webhook-id": "msg_1",
    }
    async with sender_for() as sender:
        await sender.send(f"http://127.0.0.1:{server.port}/p/a%20b?x=1&y=2", BODY, signed)
        await sender.send(f"http://127.0.0.1:{server.port}/bare", b"raw", {})
    [(_, with_headers), (_, bare)] = server.requests
    assert with_headers == (
        b"POST /p/a%%20b?x=1&y=2 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"content-type: application/json\r\n"
        b"user-agent: hivepipe-webhooks/1\r\n"
        b"webhook-id: msg_1\r\n"
        b"Accept: */*\r\n"
        b"Content-Length: %d\r\n"
        b"\r\n%s" % (server.port, len(BODY), BODY)
    )
    # What aiohttp sent for a bytes body without headers: its User-Agent, Accept and
    # Content-Type defaults; never Accept-Encoding, Cookie or Connection.
    assert bare == (
        b"POST /bare HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"User-Agent: hivepipe-webhooks/1\r\n"
        b"Accept: */*\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Length: 3\r\n"
        b"\r\nraw" % server.port
    )


def test_host_header_omits_default_ports_and_brackets_ipv6() -> None:
    def start(url: str) -> str:
        target = parse_webhook_url(url, WebhookRules(allow_http=True))
        return request_start("POST", target.target, Origin(target.scheme, target.host, target.port))

    assert start("https://hooks.example.com/x") == (
        "POST /x HTTP/1.1\r\nHost: hooks.example.com\r\n"
    )
    assert start("http://hooks.example.com/") == "POST / HTTP/1.1\r\nHost: hooks.example.com\r\n"
    assert start("https://hooks.example.com:8443/x?a=b") == (
        "POST /x?a=b HTTP/1.1\r\nHost: hooks.example.com:8443\r\n"
    )
    assert start("https://[2606:4700::1111]:8443/x") == (
        "POST /x HTTP/1.1\r\nHost: [2606:4700::1111]:8443\r\n"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"x-evil": "a\r\nInjected: 1"},
        {"x-evil": "a\nb"},
        {"bad\r\nname": "x"},
        {"x:y": "z"},
        {"": "x"},
        {"Host": "elsewhere.example"},
        {"content-length": "0"},
        {"Transfer-Encoding": "chunked"},
        {"connection": "close"},
    ],
)
def test_headers_that_would_change_the_framing_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="may not be sent"):
        encode_request("POST / HTTP/1.1\r\nHost: h\r\n", headers, b"", _DEFAULT_HEADERS)


# --- on uvloop, as the worker runs -----------------------------------------------------------


def test_on_uvloop() -> None:
    """The worker's loop is uvloop, whose transports are not asyncio's classes: reuse, a
    closing answer, a long body, a stale connection and a timeout, on a uvloop loop."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        state = Server()
        server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/a"
        answers = {
            (0, 0): (OK, True),
            (0, 1): (OK, True),
            (0, 2): (b"", False),  # stale: sent again on connection 1
            (1, 0): (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", True),
            (2, 0): (b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n" + b"y" * 2000, True),
            (3, 0): (b"", True),  # no answer: timeout
            (4, 0): (b"", False),  # a new connection closed without an answer: not sent again
        }
        state.answer = lambda conn, n, _r: answers[conn, n]
        async with server, sender_for(timeout=0.3) as sender:
            results = [await sender.send(url, BODY, {}) for _ in range(6)]
            await settle()
            assert sender._pool is not None
            assert sender._pool.connections == 0
        assert [(r.outcome, r.status) for r in results] == [
            ("delivered", 200),
            ("delivered", 200),
            ("delivered", 200),
            ("delivered", 200),
            ("retry", None),
            ("retry", None),
        ]
        assert results[3].response_body == b"y" * 1024
        assert results[4].error == "timeout: no answer within 0.3 s"
        assert (results[5].error or "").startswith("ServerDisconnected:")
        assert [conn for conn, _ in state.requests] == [0, 0, 0, 1, 2, 3, 4]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(scenario())
