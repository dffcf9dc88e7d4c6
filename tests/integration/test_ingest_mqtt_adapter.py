"""The MQTT ingest against a real broker and real Kafka: envelopes, dead letters, a shared
subscription, a Kafka outage and a SIGKILLed adapter — nothing is lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ingest.mqtt.adapter import MqttIngest
from ingest.mqtt.probe import probe_broker
from services.entrypoints import embedded
from services.platform.broker_saves import SAVE_REQUESTS
from services.platform.mqtt_address import parse_mqtt_url
from services.platform.settings import Settings
from tests.conftest import drop_schema, new_schema
from tests.integration.ingest_support import (
    mqtt_publisher,
    prepare,
    publish_all,
    read_topic,
    register_devices,
    sample,
    wait_for_messages,
    wait_until,
)
from tests.stack import ROOT, settings_env, stack_settings

STATE = sample("relay-state.json")


@pytest.fixture(scope="module")
def base_settings(
    pg_server: str, kafka_server: str, mqtt_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    name, url = new_schema(pg_server)
    s = stack_settings(
        database_url=url,
        kafka=kafka_server,
        mqtt_url=mqtt_server,
        prefix=f"m{uuid.uuid4().hex[:10]}.",
        data_dir=Path(tmp_path_factory.mktemp("mqtt")),
        mqtt_session_expiry=600,
    )
    prepare(s)
    register_devices(
        url,
        [
            ("sensor-1", "json", True),
            ("relay-1", "relay-controller", True),
            ("off-1", "json", False),
        ],
    )
    yield s
    drop_schema(pg_server, name)


@pytest.fixture
def cfg(base_settings: Settings) -> Settings:
    """This test's own MQTT topic prefix and client id (the broker is shared)."""
    tag = uuid.uuid4().hex[:8]
    return base_settings.model_copy(
        update={"mqtt_topic_prefix": f"t{tag}/devices", "mqtt_client_id": f"ingest-{tag}"}
    )


def v5_broker(settings: Settings) -> bool:
    assert settings.mqtt_url
    return probe_broker(parse_mqtt_url(settings.mqtt_url)).protocol == 5


@asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[MqttIngest]:
    ingest = MqttIngest(settings, **kwargs)
    await ingest.start()
    try:
        await ingest.wait_subscribed(15)
        yield ingest
    finally:
        await ingest.stop()


async def publish(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    assert settings.mqtt_url
    url = settings.mqtt_url

    def send() -> None:
        with mqtt_publisher(url) as client:
            publish_all(client, messages)

    await asyncio.to_thread(send)


def topic(settings: Settings, device: str, kind: str = "up") -> str:
    return f"{settings.mqtt_topic_prefix}/{device}/{kind}"


async def messages(
    settings: Settings, name: str, match: Any, count: int = 1, timeout: float = 10
) -> list[dict[str, Any]]:
    assert settings.kafka
    return await asyncio.to_thread(
        wait_for_messages, settings.kafka, settings.topic(name), match, count, timeout=timeout
    )


def mine(settings: Settings) -> Any:
    prefix = settings.mqtt_topic_prefix + "/"
    return lambda v: str(v.get("meta", {}).get("topic", "")).startswith(prefix)


async def test_up_and_state_become_envelopes(cfg: Settings) -> None:
    up = {"time": 1700000000, "values": {"temperature": 21.5}}
    async with running(cfg) as ingest:
        before = time.time()
        await publish(
            cfg,
            [
                (topic(cfg, "sensor-1"), orjson.dumps(up)),
                (topic(cfg, "relay-1", "state"), orjson.dumps(STATE)),
            ],
        )
        found = await messages(cfg, "uplinks", mine(cfg), count=2)
        assert ingest.stats.published == 2
        assert ingest.stats.acked == 2
    by_kind = {v["meta"]["kind"]: v for v in found}
    assert by_kind["up"]["source"] == "mqtt"
    assert by_kind["up"]["device"] == "sensor-1"
    assert by_kind["up"]["payload_json"] == up
    assert by_kind["up"]["payload_hex"] is None
    assert by_kind["state"]["device"] == "relay-1"
    assert by_kind["state"]["payload_json"] == STATE
    for value in found:
        assert before - 1 <= value["received"] <= time.time() + 1
        assert round(value["received"] * 1000) == value["received"] * 1000  # milliseconds


async def test_messages_that_cannot_be_used_go_to_dead_letter_and_are_acked(
    cfg: Settings,
) -> None:
    cfg = cfg.model_copy(update={"max_body_bytes": 1024})
    sent = [
        (topic(cfg, "sensor-1"), b"{not json"),
        (topic(cfg, "sensor-1"), b'{"values": {"t": 1}, "pad": "' + b"x" * 2000 + b'"}'),
        (topic(cfg, "nobody-1"), b'{"values": {"t": 1}}'),
        (topic(cfg, "off-1"), b'{"values": {"t": 1}}'),
    ]
    async with running(cfg) as ingest:
        await publish(cfg, sent)
        dead = await messages(cfg, "dead-letter", mine(cfg), count=4)
        assert ingest.stats.acked == 4
    errors = sorted(v["error"].split(":")[0] for v in dead)
    assert errors == ["inactive_device", "invalid_json", "payload_too_large", "unknown_device"]
    by_error = {v["error"].split(":")[0]: v for v in dead}
    assert by_error["invalid_json"]["payload_text"] == "{not json"
    assert by_error["invalid_json"]["device"] == "sensor-1"
    assert by_error["payload_too_large"]["payload_size"] > 2000
    assert by_error["unknown_device"]["payload_json"] == {"values": {"t": 1}}
    # Everything was acknowledged: the same session gets nothing again.
    async with running(cfg) as again:
        await asyncio.sleep(1.0)
        assert again.stats.received == 0


async def test_the_linger_gathers_a_steady_trickle_but_holds_no_rare_message(
    cfg: Settings,
) -> None:
    """Messages every 10-20 ms: without a linger each would be its own batch (a commit and a
    Kafka request each); with 400 ms they are journaled and published together. A message
    that comes alone is not held for the linger."""
    assert cfg.mqtt_url
    url = cfg.mqtt_url

    def trickle(client: Any, count: int, every: float) -> None:
        for n in range(count):
            body = orjson.dumps({"values": {"n": n}})
            client.publish(topic(cfg, "sensor-1"), body, qos=1)
            time.sleep(every)

    async def acked(ingest: MqttIngest, count: int) -> None:
        deadline = time.monotonic() + 10
        while ingest.stats.acked < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert ingest.stats.acked == count

    lingering = cfg.model_copy(update={"mqtt_linger_ms": 400})
    async with running(lingering) as ingest:
        with mqtt_publisher(url) as client:
            # A first message warms the path (Kafka metadata, the journal's statement), and
            # the rate's windows (1 s) forget it: what is timed next is the linger alone.
            await asyncio.to_thread(trickle, client, 1, 0)
            await acked(ingest, 1)
            await asyncio.sleep(1.1)
            # One message alone: answered at once, not after the linger.
            started = time.monotonic()
            await asyncio.to_thread(trickle, client, 1, 0)
            await acked(ingest, 2)
            assert time.monotonic() - started < 0.3
            # A steady 100/s makes the linger worth it; then 10 messages 20 ms apart.
            await asyncio.to_thread(trickle, client, 40, 0.01)
            await acked(ingest, 42)
            before = ingest.stats.batches
            await asyncio.to_thread(trickle, client, 10, 0.02)
            await acked(ingest, 52)
            assert ingest.stats.batches - before <= 2, ingest.stats.batches - before
    # The same session (another client id would share the subscription with the first's).
    plain = cfg.model_copy(update={"mqtt_linger_ms": 0})
    async with running(plain) as ingest:
        with mqtt_publisher(url) as client:
            await asyncio.to_thread(trickle, client, 10, 0.02)
            await acked(ingest, 10)
            assert ingest.stats.batches >= 5, ingest.stats.batches


async def test_a_shared_subscription_splits_the_load(cfg: Settings) -> None:
    if not v5_broker(cfg):
        pytest.skip("the broker has no MQTT 5 shared subscriptions")
    first = cfg.model_copy(update={"mqtt_client_id": cfg.mqtt_client_id + "-a"})
    second = cfg.model_copy(update={"mqtt_client_id": cfg.mqtt_client_id + "-b"})
    count = 200
    async with running(first) as a, running(second) as b:
        assert a.capabilities is not None
        assert a.capabilities.shared
        await publish(
            cfg,
            [(topic(cfg, "sensor-1"), orjson.dumps({"values": {"n": n}})) for n in range(count)],
        )
        found = await messages(cfg, "uplinks", mine(cfg), count=count)
        assert a.stats.published > 0
        assert b.stats.published > 0
        assert a.stats.published + b.stats.published == count
    assert sorted(v["payload_json"]["values"]["n"] for v in found) == list(range(count))


async def test_a_kafka_outage_holds_the_acks_and_loses_nothing(
    cfg: Settings, tmp_path: Path
) -> None:
    if not v5_broker(cfg):
        pytest.skip("redelivery of unacknowledged messages is tested on an MQTT 5 broker")
    port = embedded.free_port()
    kafka = embedded.start_kafka(tmp_path, port=port)
    cfg = cfg.model_copy(update={"kafka": kafka.url})
    try:
        async with running(cfg) as ingest:
            await publish(cfg, [(topic(cfg, "sensor-1"), b'{"values": {"n": -1}}')])
            await messages(cfg, "uplinks", mine(cfg))
            assert ingest.stats.acked == 1
            kafka.stop(timeout=0.5)
            await publish(
                cfg,
                [(topic(cfg, "sensor-1"), orjson.dumps({"values": {"n": n}})) for n in range(30)],
            )
            await asyncio.sleep(1.5)
            assert ingest.stats.acked == 1  # nothing acknowledged while Kafka is away
            kafka = embedded.start_kafka(tmp_path, port=port)  # empty: topics re-created
            assert cfg.kafka
            bootstrap, uplinks = cfg.kafka, cfg.topic("uplinks")

            def all_thirty() -> set[int] | None:
                found = {
                    v["payload_json"]["values"]["n"]
                    for v in read_topic(bootstrap, uplinks)
                    if mine(cfg)(v)
                }
                return found if len(found) >= 30 else None

            # At least once: a batch retried across the restart may be there twice.
            found = await asyncio.to_thread(wait_until, all_thirty, timeout=20, interval=0.2)
            assert sorted(found) == list(range(30))
            assert await asyncio.to_thread(wait_until, lambda: ingest.stats.acked == 31, timeout=5)
    finally:
        kafka.stop(timeout=0.5)


def _spawn(settings: Settings, log: Path, **env: str) -> subprocess.Popen[bytes]:
    variables = settings_env(settings)
    variables.update({f"HIVEPIPE_{k.upper()}": v for k, v in env.items()})
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.entrypoints.cli", "ingest", "mqtt"],
            env=variables,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _received(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return 0.0
    match = re.search(r'^hivepipe_uplinks_received_total\{source="mqtt"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_a_killed_adapter_loses_nothing(cfg: Settings, tmp_path: Path) -> None:
    """SIGKILL between receive and publish (Kafka unreachable): the restart gets everything."""
    if not v5_broker(cfg):
        pytest.skip("redelivery of unacknowledged messages is tested on an MQTT 5 broker")
    assert cfg.kafka
    assert cfg.mqtt_url
    log = tmp_path / "mqtt-ingest.log"
    metrics_port = embedded.free_port()
    nowhere = f"127.0.0.1:{embedded.free_port()}"  # nothing listens: publishing fails
    proc = _spawn(cfg, log, kafka=nowhere, mqtt_metrics_port=str(metrics_port))
    count = 50
    try:
        # Messages published before the first subscription exists would not be queued.
        wait_until(lambda: proc.poll() is None and "MQTT subscribed" in log.read_text(), timeout=15)
        with mqtt_publisher(cfg.mqtt_url) as client:
            publish_all(
                client,
                [
                    (topic(cfg, "sensor-1"), orjson.dumps({"values": {"n": n}}))
                    for n in range(count)
                ],
            )
        wait_until(lambda: _received(metrics_port) >= 1, timeout=10)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not [v for v in read_topic(cfg.kafka, cfg.topic("uplinks")) if mine(cfg)(v)]
    proc = _spawn(cfg, log)
    try:
        found = wait_for_messages(
            cfg.kafka, cfg.topic("uplinks"), mine(cfg), count=count, timeout=20
        )
        assert sorted({v["payload_json"]["values"]["n"] for v in found}) == list(range(count))
        # A graceful stop on SIGTERM.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_an_mqtt_311_broker_gets_plain_subscriptions(cfg: Settings, tmp_path: Path) -> None:
    port = embedded.free_port()
    with (tmp_path / "amqtt.log").open("ab") as out:
        broker = subprocess.Popen(
            [sys.executable, "-m", "services.entrypoints.amqtt_broker", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        embedded.wait_for_port(port, proc=broker)
        cfg = cfg.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{port}"})
        async with running(cfg) as ingest:
            assert ingest.capabilities is not None
            assert ingest.capabilities.protocol == 4  # MQTT 3.1.1
            assert not ingest.capabilities.shared
            await publish(cfg, [(topic(cfg, "sensor-1"), b'{"values": {"t": 3}}')])
            [found] = await messages(cfg, "uplinks", mine(cfg))
            assert found["payload_json"] == {"values": {"t": 3}}
    finally:
        broker.terminate()
        broker.wait(10)


async def test_a_failure_while_preparing_a_batch_never_stalls_the_adapter(
    cfg: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.mqtt.adapter

    real = ingest.mqtt.adapter.mqtt_uplink

    def flaky(topic: str, payload: bytes, **kwargs: Any) -> Any:
        if payload == b'{"boom": 1}':
            raise RuntimeError("injected fault")
        return real(topic, payload, **kwargs)

    monkeypatch.setattr(ingest.mqtt.adapter, "mqtt_uplink", flaky)
    async with running(cfg) as adapter:
        await publish(cfg, [(topic(cfg, "sensor-1"), b'{"boom": 1}')])
        [dead] = await messages(cfg, "dead-letter", mine(cfg))
        assert dead["error"] == "internal_error"
        assert dead["payload_text"] == '{"boom": 1}'
        await publish(cfg, [(topic(cfg, "sensor-1"), b'{"values": {"t": 9}}')])
        [up] = await messages(cfg, "uplinks", mine(cfg))
        assert up["payload_json"] == {"values": {"t": 9}}
        assert adapter.stats.acked == 2


async def test_the_adapter_reconnects_when_its_broker_restarts(
    cfg: Settings, tmp_path: Path
) -> None:
    """paho runs on the adapter's loop, with no thread of its own to reconnect: the adapter
    connects again after the broker is gone, and what is published then arrives."""
    broker = embedded.start_mqtt(tmp_path)
    try:
        cfg = cfg.model_copy(update={"mqtt_url": broker.url})
        async with running(cfg) as ingest:
            await publish(cfg, [(topic(cfg, "sensor-1"), b'{"values": {"t": 1}}')])
            await messages(cfg, "uplinks", mine(cfg))
            await asyncio.to_thread(broker.stop)
            async with asyncio.timeout(10):  # the adapter notices the broker is gone
                while ingest.subscribed:
                    await asyncio.sleep(0.05)
            assert broker.relaunch is not None
            broker = await asyncio.to_thread(broker.relaunch)
            await ingest.wait_subscribed(30)
            await publish(cfg, [(topic(cfg, "sensor-1"), b'{"values": {"t": 2}}')])
            found = await messages(cfg, "uplinks", mine(cfg), count=2, timeout=15)
            assert sorted(m["payload_json"]["values"]["t"] for m in found) == [1, 2]
            assert ingest.stats.acked == 2
    finally:
        broker.stop()


async def test_on_receipt_what_the_adapter_holds_survives_a_kill_of_its_broker(
    cfg: Settings, tmp_path: Path
) -> None:
    """``HIVEPIPE_EMBEDDED_MQTT_SAVE=on-receipt``: the adapter asks the embedded Mosquitto
    for a save as messages come in (services/platform/broker_saves.py). With its database down
    it cannot journal them, so it holds them unacknowledged; Mosquitto, killed with -9 and
    relaunched, delivers them again to the adapter's session, and an adapter with the database
    back publishes them. (Mosquitto's own save once a second would mostly come too late: the
    kill follows the messages within about 0.2 s.)"""
    broker = embedded.start_mqtt(tmp_path, save="on-receipt")
    try:
        cfg = cfg.model_copy(update={"mqtt_url": broker.url})
        down = cfg.model_copy(
            update={
                "database_url": "postgresql://127.0.0.1:9/down?connect_timeout=1",
                "embedded_mqtt_pid_file": embedded.mosquitto_pid_file(tmp_path),
            }
        )
        asked = SAVE_REQUESTS._value.get()
        holder = MqttIngest(down)
        await holder.start()
        try:
            await holder.wait_subscribed(15)
            bodies = [orjson.dumps({"values": {"t": n}}) for n in range(5)]
            await publish(cfg, [(topic(cfg, "sensor-1"), body) for body in bodies])
            async with asyncio.timeout(10):  # in its batch (journal retried) or queued
                while holder.stats.received + holder._bridge.pending < 5:
                    await asyncio.sleep(0.01)
            assert holder.stats.acked == 0
            assert SAVE_REQUESTS._value.get() > asked
            await asyncio.sleep(0.05)
            os.kill(broker.pid, signal.SIGKILL)
            await asyncio.to_thread(broker.proc.wait)
        finally:
            await holder.stop(drain_timeout=1)
        assert broker.relaunch is not None
        broker = await asyncio.to_thread(broker.relaunch)
        async with running(cfg):
            found = await messages(cfg, "uplinks", mine(cfg), count=5, timeout=15)
        assert sorted(m["payload_json"]["values"]["t"] for m in found) == list(range(5))
    finally:
        broker.stop()
