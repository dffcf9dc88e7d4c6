"""The benchmarks' lean HTTP load generator (bench/http_load.py) against a real socket."""

from __future__ import annotations

import asyncio

from bench.http_load import http_load


async def test_the_lean_load_generator_reads_answers_whole_split_or_bodiless() -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            seen.append(head.split(b"\r\n")[0] + b" " + body)
            if body == b"204":
                writer.write(b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n")
            elif body == b"split":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(b"ngth: 5\r\n\r\nhel")
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(b"lo")
            else:  # answered, then the connection closed
                writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno")
                await writer.drain()
                writer.close()
                return
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, http_load(f"http://127.0.0.1:{port}", 2) as load:
        prepared = load.prepare("/callbacks/sigfox", {"X-Callback-Token": "t"})
        answers = await asyncio.gather(*(load.post(prepared, b"204") for _ in range(10)))
        assert answers == [(204, b"")] * 10
        assert await load.post(prepared, b"split") == (200, b"hello")
        assert await load.post(prepared, b"close") == (401, b"no")
        # The closed connection is replaced: the next requests are answered.
        assert await asyncio.gather(load.post(prepared, b"204"), load.post(prepared, b"204")) == [
            (204, b""),
            (204, b""),
        ]
    assert seen[0] == b"POST /callbacks/sigfox HTTP/1.1 204"
    assert len(seen) == 14
