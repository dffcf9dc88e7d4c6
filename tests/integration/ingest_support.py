"""Helpers of the ingest tests: the API on a real port in its own thread, Kafka topics read back,
devices registered, MQTT messages published — all against the real servers of the suite."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as mqtt
import psycopg
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.rows import dict_row

from services.platform.db import migrate
from services.platform.events import ALL_TOPICS
from services.platform.kafka import ensure_topics
from services.platform.settings import Settings
from tests.samples import sample as sample

T = TypeVar("T")


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a helper thread (any test can)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(factory())
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


async def _prepare(settings: Settings) -> None:
    assert settings.database_url
    assert settings.kafka
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        await migrate(conn)
    await ensure_topics(settings.kafka, [settings.topic(t) for t in ALL_TOPICS], 2)


def prepare(settings: Settings) -> None:
    """Migrations in the settings' schema, and the topics of its prefix."""
    run_async(lambda: _prepare(settings))


def register_devices(database_url: str, devices: list[tuple[str, str, bool]]) -> None:
    """Register ``(id, model, active)`` devices (ids canonical), owned by a test user."""
    from services.devices.ids import validate_new_device

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO users (username) VALUES (%s) RETURNING id", (f"u{uuid.uuid4().hex[:8]}",)
        ).fetchone()
        assert row is not None
        for device_id, model, active in devices:
            canonical, network = validate_new_device(device_id, model)
            conn.execute(
                "INSERT INTO devices (id, name, model, network, owner_id, active)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (canonical, device_id, model, network, row[0], active),
            )


async def _read_topic(bootstrap: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= end[tp] for tp in tps):
                break
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    out.append((key, orjson.loads(record.value)))  # type: ignore[arg-type]
        return out
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every message of ``topic`` now (values as JSON), from the beginning."""
    return [value for _, value in run_async(lambda: _read_topic(bootstrap, topic))]


def read_keyed(bootstrap: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    return run_async(lambda: _read_topic(bootstrap, topic))


def wait_until(check: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.1) -> T:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def wait_for_messages(
    bootstrap: str,
    topic: str,
    match: Callable[[dict[str, Any]], bool],
    count: int = 1,
    *,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The messages of ``topic`` matching ``match`` once there are at least ``count``."""

    def found() -> list[dict[str, Any]] | None:
        values = [v for v in read_topic(bootstrap, topic) if match(v)]
        return values if len(values) >= count else None

    return wait_until(found, timeout=timeout, interval=0.2)


@contextmanager
def api_server(settings: Settings) -> Iterator[str]:
    """The real API (create_app, its lifespan, a real KafkaPublisher) on a port, in a thread."""
    from services.entrypoints.api_app import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.api_port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        server.should_exit = True
        thread.join(30)


def mqtt_host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    return host, int(port)


@contextmanager
def mqtt_publisher(url: str) -> Iterator[mqtt.Client]:
    """A connected MQTT 3.1.1 client (a device); publishes wait for the broker's PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    host, port = mqtt_host_port(url)
    client.connect(host, port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()


def metric(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry (0 when absent)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0
