"""A steady, bounded load on loopback, and what PostgreSQL stored of it.

Each message is one point whose time is its own (``base + seq``), so the ``points`` table tells
which accepted uplinks were stored, how often, and when the first one sent after a fault was.
Sigfox callbacks go to the API (an Orbit temperature frame, one sample, distinct seqNumbers),
accepted when answered 2xx; MQTT publishes (JSON measurements) go at QoS 1 to the embedded
broker, accepted when it PUBACKs them.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import httpx
import orjson
import psycopg
from paho.mqtt.client import Client, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from services.platform.mqtt_address import parse_mqtt_url


@dataclass
class Sent:
    """One message of the load: when it went, the time of its point, and the answer."""

    seq: int
    at: float
    time: int
    outcome: str = "pending"
    accepted: bool = False
    #: Seconds until the answer (a callback's), or until the client gave up.
    waited: float = 0.0


async def sigfox_load(
    api_url: str,
    token: str,
    device: str,
    *,
    rate: float,
    duration: float,
    base: int,
    first_seq: int = 0,
) -> list[Sent]:
    """``rate`` callbacks a second for ``duration`` seconds, each with its own seqNumber (from
    ``first_seq``), never waiting for an answer before the next (a network does not); each is
    given 10 s (Sigfox's)."""
    sent: list[Sent] = []
    # As many connections as requests in flight (a network's callbacks do not queue behind
    # each other): the time a callback waits is then the server's alone.
    limits = httpx.Limits(max_connections=2048, max_keepalive_connections=64)
    headers = {"X-Callback-Token": token}
    async with httpx.AsyncClient(base_url=api_url, timeout=10.0, limits=limits) as client:

        async def post(item: Sent) -> None:
            body = {
                "device": device,
                "time": item.time,
                "data": f"010f{2000 + item.seq % 1000:04x}",
                "seqNumber": first_seq + item.seq,
            }
            started = time.monotonic()
            try:
                answer = await client.post("/callbacks/sigfox", json=body, headers=headers)
            except httpx.HTTPError as exc:
                item.outcome = type(exc).__name__
                return
            finally:
                item.waited = time.monotonic() - started
            item.outcome = str(answer.status_code)
            item.accepted = answer.is_success

        tasks = []
        started = time.monotonic()
        for seq in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
            item = Sent(seq, time.monotonic(), base + seq)
            sent.append(item)
            tasks.append(asyncio.create_task(post(item)))
        await asyncio.gather(*tasks)
    return sent


def _acked(info: MQTTMessageInfo) -> bool:
    """Whether the broker PUBACKed the message (one published while the client was not
    connected, the broker away, never is)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


class MqttLoad:
    """A device publishing at QoS 1 to the broker (paho's network loop in its own thread)."""

    def __init__(self, url: str, device: str) -> None:
        address = parse_mqtt_url(url)
        self.topic = f"devices/{device}/up"
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        if not connected.wait(10):
            raise TimeoutError("the MQTT broker did not answer")

    def publish(self, item: Sent) -> MQTTMessageInfo:
        payload = orjson.dumps({"time": item.time, "values": {"temperature": 20 + item.seq % 10}})
        return self.client.publish(self.topic, payload, qos=1)

    async def run(self, *, rate: float, duration: float, base: int) -> list[Sent]:
        """``rate`` publishes a second for ``duration`` seconds; then up to 10 s for PUBACKs."""
        sent: list[tuple[Sent, MQTTMessageInfo]] = []
        started = time.monotonic()
        for seq in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
            item = Sent(seq, time.monotonic(), base + seq)
            sent.append((item, self.publish(item)))
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not all(_acked(i) for _, i in sent):
            await asyncio.sleep(0.1)
        for item, info in sent:
            item.accepted = _acked(info)
            item.outcome = "puback" if item.accepted else MQTTErrorCode(info.rc).name
        return [item for item, _ in sent]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Points:
    """What the ``points`` table holds for the load's devices (reconnecting after an outage)."""

    def __init__(self, url: str, devices: list[str]) -> None:
        self.url = url
        self.devices = devices
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def _query(self, sql: str) -> list[tuple[object, ...]] | None:
        """The rows, or None while PostgreSQL does not answer."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=2
                )
            cur = await self._conn.execute(sql, {"devices": self.devices})
            return await cur.fetchall()
        except psycopg.Error:
            if self._conn is not None:
                await self._conn.close()
            self._conn = None
            return None

    async def newest(self) -> dict[str, int] | None:
        """Each device's newest point time (Unix seconds); None while the database is away."""
        rows = await self._query(
            "SELECT device, extract(epoch FROM max(time))::bigint FROM points"
            " WHERE device = ANY(%(devices)s) GROUP BY device"
        )
        return None if rows is None else {str(d): int(t) for d, t in rows}  # type: ignore[call-overload]

    async def stored(self) -> dict[str, Counter[int]] | None:
        """Each device's point times, with how many rows each has."""
        rows = await self._query(
            "SELECT device, extract(epoch FROM time)::bigint, count(*) FROM points"
            " WHERE device = ANY(%(devices)s) GROUP BY 1, 2"
        )
        if rows is None:
            return None
        found: dict[str, Counter[int]] = {d: Counter() for d in self.devices}
        for device, at, count in rows:
            found[str(device)][int(at)] = int(count)  # type: ignore[call-overload]
        return found

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
