"""A lean HTTP/1.1 load generator: keep-alive connections, one request in flight on each.

The benchmarks' load generator shares the two cores with the system under test, so what it
costs per request is taken from the pipeline (or from the Node-RED flow it is compared with).
aiohttp's client took 0.15–0.20 ms of CPU per callback, more than a third of the pipeline's own
during the flood; a network server or a device would not sit on the same machine. This client
writes prepared bytes and reads the status line and ``Content-Length``: about a tenth of that.

It speaks only what the benchmarks need: ``POST`` with a body, answers with a
``Content-Length`` or without a body (204), no chunked answers, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit


class HttpError(Exception):
    """A connection closed, or an answer this client does not read."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`request` sends one request and waits for its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection closed: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._answer()
        except (HttpError, ValueError) as exc:
            waiter.set_exception(HttpError(f"unreadable answer: {exc!r}"))
            return
        if answer is not None:
            waiter.set_result(answer)

    def _answer(self) -> tuple[int, bytes] | None:
        """The buffer's first whole answer (removed from it), or None while it is partial."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[:end]).lower()
        status = int(head[9:12])
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : line_end if line_end >= 0 else None])
        elif b"\r\ntransfer-encoding:" in head:
            raise HttpError("chunked answers are not read by this client")
        if len(buffer) < end + 4 + length:
            return None
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        return status, body

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.waiter = None


class HttpLoad:
    """``connections`` keep-alive connections to ``base_url``; :meth:`post` takes a free one."""

    def __init__(self, base_url: str, connections: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an http:// URL with a host, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.size = connections
        self._free: asyncio.Queue[_Connection] = asyncio.Queue()
        self._all: list[_Connection] = []

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        self._all.append(connection)
        return connection

    async def open(self) -> None:
        for connection in await asyncio.gather(*(self._connect() for _ in range(self.size))):
            self._free.put_nowait(connection)

    def close(self) -> None:
        for connection in self._all:
            if connection.transport is not None:
                connection.transport.close()
        self._all.clear()

    def prepare(self, path: str, headers: Mapping[str, str]) -> bytes:
        """The request line and fixed headers of ``POST path`` (the body's length is added)."""
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode()

    async def post(self, prepared: bytes, body: bytes) -> tuple[int, bytes]:
        """Send ``prepared`` (from :meth:`prepare`) with ``body``; the status and the body.

        A connection the server closed is replaced once, and the request sent again on it."""
        connection = await self._free.get()
        data = b"".join((prepared, str(len(body)).encode(), b"\r\n\r\n", body))
        try:
            if connection.closed:
                connection = await self._connect()
            try:
                return await connection.request(data)
            except HttpError:
                if not connection.closed:
                    raise
                connection = await self._connect()
                return await connection.request(data)
        finally:
            self._free.put_nowait(connection)


@contextlib.asynccontextmanager
async def http_load(base_url: str, connections: int) -> AsyncIterator[HttpLoad]:
    """An open :class:`HttpLoad`, closed on the way out."""
    load = HttpLoad(base_url, connections)
    await load.open()
    try:
        yield load
    finally:
        load.close()
