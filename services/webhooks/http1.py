"""A lean HTTP/1.1 client for webhook deliveries: keep-alive connections on asyncio, answers read
with ``httptools`` (llhttp), one request in flight per connection.

It does only what :class:`services.webhooks.http_sender.HttpWebhookSender` needs, and nothing
implicit: no redirects, cookies, proxies, decompression, retries (but one, below) or timers of
its own. The caller bounds each request with one deadline (``asyncio.timeout``); cancelling a
request closes its connection.

- :class:`Http1Pool` keeps idle connections per :class:`Origin` (scheme, host name, port): a
  connection opened and verified for one name never carries a request for another. New
  connections go to the address ``pick`` returns (the caller's pinned, checked choice),
  through a socket made by ``socket_factory`` (the caller's last check, right before
  ``connect()``); ``https`` is verified, and SNI sent, for the host name, never the address.
- An idle connection is closed after ``keepalive`` seconds, and as soon as the server closes it
  or sends anything while no request is waiting for an answer.
- :class:`Answer` holds what came back: the status, headers, and at most ``max_body`` bytes of
  the body. It is filled as the bytes arrive, so the caller still has the status when the
  deadline or the end of the connection cuts the body. A connection is reused only after a
  whole answer that fits in ``max_body`` and lets it live (no ``Connection: close``, not
  HTTP/1.0 without keep-alive, not a body read until the close, not ``101``).
- Interim ``1xx`` answers (``100 Continue``, ``103 Early Hints``) are skipped; ``101`` is the
  answer (the caller classifies it) and the connection is closed.
- A request sent on a reused connection that the server closed before sending a single byte
  back (it had timed the idle connection out) is sent once more on a new connection: the
  server may have seen it, so the receiver must deduplicate (webhooks carry ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

import httptools

from services.webhooks.url_rules import IPAddress

#: What ``socket_factory`` gets: (family, type, proto, canonname, sockaddr), as getaddrinfo.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
PickAddress = Callable[[str], Awaitable[IPAddress]]
SocketFactory = Callable[[AddrInfo], socket.socket]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Framing and routing are the client's: a caller's value would contradict the request it sends.
_CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class Origin(NamedTuple):
    """Where a connection goes, and what it may be reused for: scheme, host name, port."""

    scheme: str
    host: str
    port: int


class Http1Error(Exception):
    """The server's side of the exchange failed (closed, or answered something unreadable)."""


class ServerDisconnected(Http1Error):
    """The connection ended before the answer's status line and headers were all read."""


class StaleConnection(ServerDisconnected):
    """A reused keep-alive connection ended before a single byte of the answer came back."""


class BadAnswer(Http1Error):
    """The answer's status line or headers are not HTTP/1.x."""


class PoolClosed(Http1Error):
    """The pool was closed (:meth:`Http1Pool.aclose`) before the request could be sent."""


def host_header(origin: Origin) -> str:
    """The ``Host`` header of ``origin``: the host name (IPv6 in brackets), and the port unless
    it is the scheme's default."""
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    if _DEFAULT_PORTS.get(origin.scheme) == origin.port:
        return host
    return f"{host}:{origin.port}"


def encode_request(
    start: str,
    headers: Mapping[str, str],
    body: bytes,
    defaults: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The bytes of one request: ``start`` (the request line and ``Host``, each ending in CRLF,
    see :func:`request_start`), ``headers`` as given, each of ``defaults`` whose name (any case)
    is not among them, ``Content-Length``, the blank line and ``body``.

    Raises ``ValueError`` for a header that would split the request (CR, LF or NUL in a name or
    value, a colon in a name) and for the framing headers the client writes itself (``Host``,
    ``Content-Length``, ``Transfer-Encoding``, ``Connection``).
    """
    parts = [start]
    names: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if (
            not name
            or lower in _CLIENT_HEADERS
            or ":" in name
            or "\r" in name
            or "\n" in name
            or "\x00" in name
            or "\r" in value
            or "\n" in value
            or "\x00" in value
        ):
            raise ValueError(f"header {name!r} may not be sent (framing, or CR/LF/NUL/colon)")
        names.add(lower)
        parts.append(f"{name}: {value}\r\n")
    for name, value in defaults:
        if name.lower() not in names:
            parts.append(f"{name}: {value}\r\n")
    parts.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "".join(parts).encode("utf-8") + body


def request_start(method: str, target: str, origin: Origin) -> str:
    """The request line and ``Host`` header of a request to ``target`` (path and query, already
    percent-encoded) at ``origin``."""
    return f"{method} {target} HTTP/1.1\r\nHost: {host_header(origin)}\r\n"


class Answer:
    """What came back for one request; filled as the bytes arrive.

    ``status`` is ``None`` until the final (non-1xx) status line and headers are read;
    ``body`` holds at most the pool's ``max_body`` bytes; ``complete`` is true once the whole
    body was read and fit in it.
    """

    __slots__ = ("body", "complete", "raw_headers", "raw_reason", "status", "version")

    def __init__(self) -> None:
        self.status: int | None = None
        self.raw_reason = b""
        self.version = ""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False

    @property
    def reason(self) -> str:
        return self.raw_reason.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        wanted = name.lower().encode("ascii")
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("utf-8", "replace")
        return None


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: at most one request in flight, answers parsed by llhttp."""

    __slots__ = (
        "answer",
        "broken",
        "closed",
        "got_bytes",
        "idle",
        "idle_since",
        "lost",
        "max_body",
        "origin",
        "parser",
        "pool",
        "reused",
        "transport",
        "waiter",
    )

    def __init__(self, pool: Http1Pool, origin: Origin, max_body: int) -> None:
        self.pool = pool
        self.origin = origin
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: Answer | None = None  # while a request waits for (the rest of) its answer
        self.waiter: asyncio.Future[None] | None = None
        self.got_bytes = False  # any byte of the current answer
        self.broken = False  # must not carry another request
        self.closed = False
        self.reused = False
        self.idle = False
        self.idle_since = 0.0
        self.lost: asyncio.Future[None] = pool.loop.create_future()

    # --- the pool's side

    def send(self, data: bytes, answer: Answer) -> asyncio.Future[None]:
        """Write a request; the future is done when ``answer`` is final (or failed)."""
        assert self.transport is not None
        waiter = self.pool.loop.create_future()
        self.answer = answer
        self.waiter = waiter
        self.got_bytes = False
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        """Close gracefully (the answer was whole: nothing left to drop)."""
        self.broken = True
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping whatever is still coming (a request still waiting for its
        answer gets what :meth:`connection_lost` makes of it)."""
        self.broken = True
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.answer is None:
            # Bytes while no request waits (an early close notice, junk after an answer).
            self.abort()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.abort()  # the 101 answer is complete already
        except httptools.HttpParserError as exc:
            self._end(BadAnswer(f"unreadable answer: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost ends the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broken = True
        if self.answer is not None:
            if self.answer.status is not None:
                self._end(None)  # the status stands; the body is cut (or read until the close)
            else:
                why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
                if self.pool._closed:
                    self._end(PoolClosed("the connection pool was closed"))
                elif self.reused and not self.got_bytes:
                    self._end(StaleConnection(f"the idle connection was closed by the server{why}"))
                else:
                    self._end(ServerDisconnected(f"the server closed the connection{why}"))
        self.pool._lost(self)
        if not self.lost.done():
            self.lost.set_result(None)

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        if self.answer is None:
            self.broken = True  # a second answer to one request

    def on_status(self, status: bytes) -> None:
        if self.answer is not None:
            self.answer.raw_reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.answer is not None:
            self.answer.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        answer = self.answer
        if answer is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim answer; llhttp reports its end, then parses the next one.
            answer.raw_reason = b""
            answer.raw_headers.clear()
            return
        answer.status = status
        answer.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        if answer is None or answer.status is None:
            return
        room = self.max_body - len(answer.body)
        if len(body) > room:
            # More than we read: keep the excerpt, drop the connection rather than drain it.
            answer.body += body[:room]
            self._end(None)
            self.abort()
        else:
            answer.body += body

    def on_message_complete(self) -> None:
        answer = self.answer
        if answer is None or answer.status is None:
            return  # after an interim answer, the final one follows
        answer.complete = True
        if answer.status == 101 or not self.parser.should_keep_alive():
            self.broken = True
        self._end(None)

    def _end(self, error: Exception | None) -> None:
        self.answer = None
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


class Http1Pool:
    """Keep-alive HTTP/1.1 connections per :class:`Origin`; see the module documentation.

    ``max_idle_per_origin`` and ``max_idle`` bound the idle connections kept (the caller bounds
    the requests in flight, hence the connections in use); create the pool inside the running
    loop and close it with :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        pick: PickAddress,
        socket_factory: SocketFactory,
        ssl_context: ssl.SSLContext,
        keepalive: float = 4.0,
        max_idle_per_origin: int = 32,
        max_idle: int = 512,
        max_body: int = 1024,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._pick = pick
        self._socket_factory = socket_factory
        self._ssl = ssl_context
        self._keepalive = keepalive
        self._max_idle_per_origin = max_idle_per_origin
        self._max_idle = max_idle
        self._max_body = max_body
        self._idle: dict[Origin, list[_Connection]] = {}  # oldest first
        self._idle_count = 0
        self._all: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        """Open connections, idle or in use."""
        return len(self._all)

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    async def request(self, origin: Origin, data: bytes, answer: Answer) -> None:
        """Send ``data`` (a whole request, :func:`encode_request`) to ``origin`` and read the
        answer into ``answer``.

        Returns once the answer is final: whole, cut by the server after its headers, or past
        ``max_body``. Raises :class:`Http1Error` when no status came back, ``OSError``
        (``ssl.SSLError`` included) when the connection cannot be made, and whatever ``pick``
        or ``socket_factory`` raise. Cancelling it closes the connection; ``answer`` keeps what
        had arrived.
        """
        conn = self._take(origin)
        if conn is not None:
            try:
                await self._exchange(conn, data, answer)
                return
            except StaleConnection:
                pass  # nothing came back: send it once more, on a new connection
        conn = await self._connect(origin)
        await self._exchange(conn, data, answer)

    async def aclose(self) -> None:
        """Close every connection, idle or in use, and wait (1 s at most) until they are.

        Requests in flight fail; later ones raise :class:`PoolClosed`."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        conns = list(self._all)
        for conn in conns:
            if conn.answer is None:
                conn.close()
            else:
                conn.abort()
        self._idle.clear()
        self._idle_count = 0
        pending = [conn.lost for conn in conns if not conn.lost.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=1.0)
            for conn in conns:
                if conn.lost in late and conn.transport is not None:
                    conn.transport.abort()

    # --- internals

    async def _exchange(self, conn: _Connection, data: bytes, answer: Answer) -> None:
        try:
            await conn.send(data, answer)
        finally:
            if conn.answer is not None:  # cancelled, or an error while the answer was coming
                conn.abort()
            elif conn.broken:
                conn.close()
            else:
                self._release(conn)

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        self._drop_expired(idle, self.loop.time())
        while idle:
            conn = idle.pop()  # the newest: the least likely to be timed out by the server
            self._idle_count -= 1
            conn.idle = False
            if not conn.broken:
                conn.reused = True
                return conn
        del self._idle[origin]
        return None

    def _drop_expired(self, idle: list[_Connection], now: float) -> None:
        """Close the connections of ``idle`` (oldest first) idle for ``keepalive`` or more."""
        expired = 0
        while expired < len(idle) and now - idle[expired].idle_since >= self._keepalive:
            expired += 1
        for conn in idle[:expired]:
            conn.idle = False
            conn.close()
        del idle[:expired]
        self._idle_count -= expired

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.get(conn.origin)
        if idle is None:
            idle = self._idle[conn.origin] = []
        if len(idle) >= self._max_idle_per_origin or self._idle_count >= self._max_idle:
            conn.close()
            return
        conn.idle = True
        conn.idle_since = now = self.loop.time()
        idle.append(conn)
        self._idle_count += 1
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(now + self._keepalive, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        oldest: float | None = None
        for origin, idle in list(self._idle.items()):
            self._drop_expired(idle, now)
            if idle:
                first = idle[0].idle_since
                oldest = first if oldest is None else min(oldest, first)
            else:
                del self._idle[origin]
        if oldest is not None:
            self._sweeper = self.loop.call_at(oldest + self._keepalive, self._sweep)

    def _lost(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn.idle:
            conn.idle = False
            idle = self._idle.get(conn.origin)
            if idle is not None and conn in idle:
                idle.remove(conn)
                self._idle_count -= 1

    async def _connect(self, origin: Origin) -> _Connection:
        if self._closed:
            raise PoolClosed("the connection pool is closed")
        ip = await self._pick(origin.host)
        sockaddr: tuple[Any, ...]
        if ip.version == 6:
            family, sockaddr = socket.AF_INET6, (str(ip), origin.port, 0, 0)
        else:
            family, sockaddr = socket.AF_INET, (str(ip), origin.port)
        sock = self._socket_factory((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        conn = _Connection(self, origin, self._max_body)
        try:
            sock.setblocking(False)
            await self.loop.sock_connect(sock, sockaddr)
            if origin.scheme == "https":
                await self.loop.create_connection(
                    lambda: conn, sock=sock, ssl=self._ssl, server_hostname=origin.host
                )
            else:
                await self.loop.create_connection(lambda: conn, sock=sock)
        except BaseException:
            sock.close()  # a transport made of it closes it too; twice is harmless
            raise
        if self._closed:  # closed while this connection was being made
            conn.abort()
            raise PoolClosed("the connection pool is closed")
        self._all.add(conn)
        return conn
