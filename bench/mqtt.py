"""MQTT messages/s accepted: published at QoS 1, acknowledged by the adapter once on Kafka;
then the time until the worker has stored every one of them (so that the next section starts
on a drained pipeline, not behind this one's backlog)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg

from bench.cpu import measured
from bench.env import Running
from ingest.mqtt.adapter import MqttIngest
from services.entrypoints.roles import spawn_role, stop_process
from services.platform.mqtt_address import parse_mqtt_url


def register_mqtt_devices(url: str, devices: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        owner = conn.execute("SELECT id FROM users WHERE username = 'admin'").fetchone()
        assert owner is not None
        for i in range(devices):
            conn.execute(
                "INSERT INTO devices (id, model, network, owner_id) VALUES (%s, 'json', 'mqtt', %s)"
                " ON CONFLICT DO NOTHING",
                (f"mq-{i}", owner[0]),
            )


async def bench_mqtt(run: Running, n: int = 20_000, devices: int = 100) -> dict[str, float]:
    """Publish ``n`` JSON measurements; time until the adapter has acked all of them."""
    s = run.settings
    assert s.database_url, "the bench needs the database"
    register_mqtt_devices(s.database_url, devices)
    # The adapter's own client id, hence its session: the adapter process that ``mqtt_cpu``
    # starts next takes that session over, as a restarted adapter does. A session of another
    # id would stay a member of the shared subscription once this adapter has stopped, and
    # Mosquitto queues its share of the messages (every other one) for it until it returns.
    ingest = MqttIngest(s)
    await ingest.start()
    await ingest.wait_subscribed()
    address = parse_mqtt_url(s.mqtt_url or "")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hivepipe-bench-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        started = time.perf_counter()
        infos: list[Any] = []
        for i in range(n):
            body = orjson.dumps({"time": 1_700_000_000 + i, "values": {"temperature": 20 + i % 10}})
            infos.append(client.publish(f"{s.mqtt_topic_prefix}/mq-{i % devices}/up", body, qos=1))
        deadline = time.perf_counter() + max(60.0, n / 500)
        while ingest.stats.acked < n and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the adapter's counter has no event to wait on
        elapsed = time.perf_counter() - started
    finally:
        client.loop_stop()
        client.disconnect()
        await ingest.stop()
    stored = await _wait_stored(s.database_url, n, deadline=time.perf_counter() + 180)
    return {
        "acked": float(ingest.stats.acked),
        "rate": ingest.stats.acked / elapsed,
        "stored": float(stored),
        "stored_rate": stored / (time.perf_counter() - started),
    }


@contextlib.contextmanager
def steady_mqtt(
    run: Running, rate: float = 500.0, devices: int = 100
) -> Iterator[tuple[dict[str, int], Callable[[int, int], None]]]:
    """The MQTT adapter as its own role process (``hivepipe ingest mqtt``), as ``hivepipe up``
    runs it, subscribed and warm, and a publisher at a steady ``rate``: yields the pipeline's
    pids (with the adapter's and the MQTT broker's) and ``publish(count, base)``, which sends
    ``count`` measurements (times from ``base``) at QoS 1 and waits until they are stored."""
    s = run.settings
    assert s.database_url
    assert s.mqtt_url
    register_mqtt_devices(s.database_url, devices)
    env = run.install.child_env()
    env["HIVEPIPE_LOG_LEVEL"] = "warning"
    adapter = spawn_role("mqtt", env)
    address = parse_mqtt_url(s.mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hivepipe-bench-steady")
    client.max_inflight_messages_set(1000)
    client.connect(address.host, address.port)
    client.loop_start()

    def send(count: int, base: int, within: float) -> int:
        """Publish, then wait up to ``within`` s for them to be stored; how many were."""
        started = time.perf_counter()
        for i in range(count):
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
            body = orjson.dumps({"time": base + i, "values": {"temperature": 20 + i % 10}})
            client.publish(f"{s.mqtt_topic_prefix}/mq-{i % devices}/up", body, qos=1)
        deadline = time.perf_counter() + within
        return asyncio.run(_wait_stored(s.database_url or "", count, deadline=deadline, since=base))

    def publish(count: int, base: int) -> None:
        stored = send(count, base, 120.0)
        if stored < count:  # the CPU figure would hold the idle wait: no figure rather
            raise RuntimeError(f"only {stored} of {count} MQTT messages stored within 120 s")

    try:
        # The adapter subscribed (what is published before goes to no one) and warm.
        warm, base = 0, 1_800_000_000
        while send(100, base, 2.0) < 100 and warm < 30:
            warm, base = warm + 1, base + 100
        send(400, base + 100, 30.0)
        yield {**run.pids(mqtt=True), "mqtt adapter": adapter.pid}, publish
    finally:
        client.loop_stop()
        client.disconnect()
        stop_process(adapter)


def mqtt_cpu(
    run: Running, n: int = 5_000, rate: float = 500.0, devices: int = 100
) -> dict[str, float]:
    """CPU per MQTT message at a steady ``rate``, per process (:func:`steady_mqtt`), the
    publisher (the load generator) excluded. Returns ms per message by process and their
    ``total``."""
    with steady_mqtt(run, rate, devices) as (pids, publish):
        return measured(pids, n, lambda: publish(n, 1_900_000_000))


async def _wait_stored(url: str, n: int, *, deadline: float, since: int = 1_700_000_000) -> int:
    """Wait until the ``n`` points of this run are stored (or the deadline); returns the count."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM points WHERE device LIKE 'mq-%%' AND time >= %s",
                (dt.datetime.fromtimestamp(since, dt.UTC),),
            )
            row = await cur.fetchone()
            count = int(row[0]) if row else 0
            if count >= n or time.perf_counter() > deadline:
                return count
            await asyncio.sleep(0.2)
