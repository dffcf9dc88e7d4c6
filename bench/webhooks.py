"""Webhook deliveries: how many per second reach a local receiver, and how long after storing.

The webhook stage is measured on its own: messages are produced straight onto the internal
``webhook-readings`` topic (what the decode agent publishes once a batch is stored, for the
devices that have webhooks), so the figure is not capped by the ingest and decode stages in
front of it. Everything behind it is real: the worker's webhook agent (lookup, plan,
signed POSTs through the HTTP sender, attempts recorded in PostgreSQL) and a receiver on
127.0.0.1 in this process (a bare asyncio HTTP/1.1 server, so the receiver costs little CPU).

The pipeline must allow webhooks to the receiver:
``running_pipeline(webhook_allowed_cidrs="127.0.0.0/8", webhook_allow_http=True)``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from bench.callbacks import percentile
from bench.env import Running
from services.platform.events import TOPIC_WEBHOOK_READINGS

_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@dataclass
class Arrivals:
    """What the receiver got: (arrival time, body) per request."""

    seen: list[tuple[float, bytes]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    want: int = 0

    def add(self, body: bytes) -> None:
        self.seen.append((time.time(), body))
        if self.want and len(self.seen) >= self.want:
            self.event.set()


class _Receiver(asyncio.Protocol):
    """HTTP/1.1 keep-alive: reads each request (Content-Length bodies) and answers 204."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            start = head.find(b"content-length:")
            length = 0
            if start >= 0:
                stop = head.find(b"\r\n", start)
                length = int(head[start + 15 : stop if stop >= 0 else None])
            total = end + 4 + length
            if len(buf) < total:
                return
            self._arrivals.add(bytes(buf[end + 4 : total]))
            del buf[:total]
            assert self._transport is not None
            self._transport.write(_NO_CONTENT)


async def _start_receiver(arrivals: Arrivals) -> tuple[asyncio.AbstractServer, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Receiver(arrivals), "127.0.0.1", 0, backlog=1024)
    return server, server.sockets[0].getsockname()[1]


async def _setup(run: Running, port: int, devices: int) -> list[str]:
    """A normal user owning ``devices`` devices, each with one webhook to the receiver."""
    import psycopg
    from psycopg.rows import dict_row

    from services.accounts.keys import issue_key, key_scopes
    from services.accounts.users import add_user
    from services.devices.store import create_device

    url = run.settings.database_url or ""
    tag = uuid.uuid4().hex[:6]
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        user = await add_user(conn, username=f"bench-hooks-{tag}")
        key, _ = await issue_key(
            conn,
            user_id=user["id"],
            name="bench",
            scopes=key_scopes(["admin"], is_integrator=False),
        )
        ids = [f"{tag.upper()[:4]}{i:04X}" for i in range(devices)]
        for device in ids:
            await create_device(
                conn, device_id=device, model="orbit-t", name="", owner_id=user["id"]
            )
    async with httpx.AsyncClient(base_url=run.base_url, timeout=30) as client:
        sem = asyncio.Semaphore(16)

        async def hook(device: str) -> None:
            async with sem:
                r = await client.post(
                    f"/v1/devices/{device}/webhooks",
                    json={"url": f"http://127.0.0.1:{port}/hook/{device}"},
                    headers={"X-API-Key": key},
                )
            if r.status_code != 201:
                raise RuntimeError(
                    f"cannot register a webhook to 127.0.0.1 ({r.text}); start the pipeline with"
                    " webhook_allowed_cidrs='127.0.0.0/8', webhook_allow_http=True"
                )

        await asyncio.gather(*(hook(d) for d in ids))
    return ids


def _message(device: str, n: int, points: int) -> tuple[bytes, dict[str, Any]]:
    base = 1_600_000_000 + n * points * 60
    value = {
        "device": device,
        "time": base,
        "uplink": f"bench-{device}-{n}",
        "points": [
            {
                "device": device,
                "time": base + k * 60,
                "metric": "temperature",
                "value": 20.0 + k,
                "unit": "°C",
            }
            for k in range(points)
        ],
        "stored": time.time(),
    }
    return device.encode(), value


async def _baseline(port: int, n: int, concurrency: int) -> float:
    """Raw aiohttp POSTs of the same bodies to the same receiver, requests/s."""
    body = orjson.dumps({"device": "X", "time": 1, "metric": "m", "value": 1.0, "unit": None})
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(concurrency)

        async def post() -> None:
            async with sem, session.post(f"http://127.0.0.1:{port}/baseline", data=body) as r:
                await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(n)))
        return n / (time.perf_counter() - started)


async def bench_webhooks(
    run: Running,
    *,
    devices: int = 500,
    messages: int = 5000,
    points: int = 4,
    latency_seconds: float = 15.0,
) -> dict[str, float]:
    """Deliveries/s to a local receiver, then p50/p99 stored -> delivered at half that rate.

    Throughput: ``messages`` stored messages of ``points`` points each (over ``devices``
    devices, one webhook each) produced as fast as Kafka takes them; ``rate`` is the
    deliveries over the time from the first produce to the last arrival, ``sustained_rate``
    the rate between the 10th and the 90th percentile of arrivals. Latency: messages
    paced at half the measured rate for ``latency_seconds``; the lag of each delivery is its
    arrival minus the message's ``stored`` time.
    """
    s = run.settings
    arrivals = Arrivals()
    server, port = await _start_receiver(arrivals)
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    topic = s.topic(TOPIC_WEBHOOK_READINGS)
    try:
        ids = await _setup(run, port, devices)
        # Warm-up: every device once (webhook cache, connections), not measured.
        arrivals.want = len(ids) * points
        futures = []
        for i, device in enumerate(ids):
            key, value = _message(device, i, points)
            futures.append(await producer.send(topic, orjson.dumps(value), key=key))
        await asyncio.gather(*futures)
        await asyncio.wait_for(arrivals.event.wait(), timeout=120)

        # Throughput.
        arrivals.seen.clear()
        arrivals.event.clear()
        total = messages * points
        arrivals.want = total
        started = time.time()
        futures = []
        for n in range(messages):
            device = ids[n % len(ids)]
            key, value = _message(device, 1_000 + n, points)
            futures.append(await producer.send(topic, orjson.dumps(value), key=key))
        await asyncio.gather(*futures)
        produced_s = time.time() - started
        try:
            await asyncio.wait_for(arrivals.event.wait(), timeout=max(120.0, total / 200))
        except TimeoutError:
            pass
        delivered = len(arrivals.seen)
        times = sorted(t for t, _ in arrivals.seen)
        last = times[-1] if times else time.time()
        rate = delivered / max(last - started, 1e-9)
        # Sustained: between the 10th and the 90th percentile of arrivals (no start-up wait).
        lo, hi = int(0.1 * len(times)), int(0.9 * len(times))
        sustained = (hi - lo) / max(times[hi - 1] - times[lo], 1e-9) if hi - lo > 1 else rate

        # Latency at half that rate.
        arrivals.seen.clear()
        arrivals.event.clear()
        target = rate / 2
        per_second = target / points  # messages/s
        count = max(1, int(per_second * latency_seconds))
        arrivals.want = count * points
        sent_at: dict[tuple[str, int], float] = {}
        t0 = time.time()
        for n in range(count):
            due = t0 + n / per_second
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            device = ids[n % len(ids)]
            key, value = _message(device, 1_000_000 + n, points)
            for point in value["points"]:
                sent_at[(device, point["time"])] = value["stored"]
            await producer.send(topic, orjson.dumps(value), key=key)
        await producer.flush()
        try:
            await asyncio.wait_for(arrivals.event.wait(), timeout=60)
        except TimeoutError:
            pass
        lags = []
        for at, body in arrivals.seen:
            point = orjson.loads(body)
            stored = sent_at.get((point["device"], point["time"]))
            if stored is not None:
                lags.append(at - stored)
        achieved = len(arrivals.seen) / max(time.time() - t0, 1e-9)
        baseline = await _baseline(port, min(total, 20_000), 32)
    finally:
        await producer.stop()
        server.close()
    return {
        "deliveries": float(delivered),
        "expected": float(total),
        "produce_seconds": produced_s,
        "rate": rate,
        "sustained_rate": sustained,
        "latency_target_rate": target,
        "latency_achieved_rate": achieved,
        "latency_deliveries": float(len(lags)),
        "p50_ms": percentile(lags, 0.50) * 1000,
        "p99_ms": percentile(lags, 0.99) * 1000,
        "baseline_rate": baseline,
    }
