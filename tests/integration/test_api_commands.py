"""Relay commands through the real API to a real MQTT broker, recorded on real Kafka."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from services.commands.publishing import parse_mqtt_url
from services.entrypoints import embedded
from services.platform.kafka import ensure_topics
from tests.api_support import (
    Account,
    Api,
    api_on_new_schema,
    command_records,
    make_account,
    running_api,
)

# tests/data/relay-command.json
SAMPLE = {
    "payload": {
        "Output": "Relay",
        "Relays": [{"relay": "SecurityAlarm", "state": 1, "id": "255.1"}],
    }
}
PREFIX = f"c{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, mqtt_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server,
        kafka=kafka_server,
        mqtt_url=mqtt_server,
        data_dir=tmp_path_factory.mktemp("commands"),
        mqtt_topic_prefix=PREFIX,
    ) as running:
        await ensure_topics(kafka_server, [running.settings.topic("commands")], 2)
        yield running


class Subscriber:
    """A real MQTT client subscribed to ``{prefix}/+/command``."""

    def __init__(self, url: str, topic: str) -> None:
        address = parse_mqtt_url(url)
        self.messages: queue.Queue[MQTTMessage] = queue.Queue()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        subscribed = queue.Queue[bool]()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda *_: subscribed.put(True)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def next(self, timeout: float = 5.0) -> MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mqtt_server: str) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_server, f"{PREFIX}/+/command")
    yield sub
    sub.close()


@pytest.fixture
async def owner(api: Api) -> Account:
    account = await make_account(api.database_url)
    created = await api.client.post(
        "/v1/devices",
        json={"id": f"relay-{account.user_id}", "model": "relay-controller"},
        headers=account.headers,
    )
    assert created.status_code == 201
    return account


async def test_command_reaches_a_subscriber_after_puback_and_is_recorded(
    api: Api, owner: Account, subscriber: Subscriber
) -> None:
    device = f"relay-{owner.user_id}"
    answer = await api.client.post(
        f"/v1/devices/{device}/commands", json=SAMPLE, headers=owner.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "Command sent successfully"}
    message = subscriber.next()
    assert message.topic == f"{PREFIX}/{device}/command"
    assert message.qos == 1
    assert not message.retain
    assert json.loads(message.payload) == SAMPLE["payload"]
    [record] = await command_records(api, device)
    assert set(record) == {"id", "device", "kind", "payload", "requested", "outcome"}
    assert record["kind"] == "command"
    assert record["payload"] == SAMPLE["payload"]
    assert record["outcome"] == {"status": "sent"}
    assert abs(record["requested"] - time.time()) < 60


async def test_invalid_commands_are_400_and_not_published(
    api: Api, owner: Account, subscriber: Subscriber
) -> None:
    device = f"relay-{owner.user_id}"
    for payload in (
        {},
        {"Output": ""},
        {"Output": "Relay"},
        {"Output": "Relay", "Relays": [{"state": 1}]},
        {"Output": "Relay", "Relays": [{"id": "1", "state": 2}]},
        "text",
        [1, 2],
    ):
        answer = await api.client.post(
            f"/v1/devices/{device}/commands", json={"payload": payload}, headers=owner.headers
        )
        assert answer.status_code == 400, (payload, answer.text)
        assert answer.json()["error"]["code"] == "invalid_command"
    missing = await api.client.post(
        f"/v1/devices/{device}/commands", json={}, headers=owner.headers
    )
    assert missing.status_code == 422
    with pytest.raises(queue.Empty):
        subscriber.next(timeout=0.5)


async def test_unknown_foreign_and_non_mqtt_devices(api: Api, owner: Account) -> None:
    other = await make_account(api.database_url)
    for device in ("nope", f"relay-{other.user_id}"):
        answer = await api.client.post(
            f"/v1/devices/{device}/commands", json=SAMPLE, headers=owner.headers
        )
        assert answer.status_code == 404
    sigfox = await api.client.post(
        "/v1/devices", json={"id": f"{owner.user_id:X}A", "model": "orbit-t"}, headers=owner.headers
    )
    assert sigfox.status_code == 201
    refused = await api.client.post(
        f"/v1/devices/{sigfox.json()['id']}/commands", json=SAMPLE, headers=owner.headers
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "commands_not_supported"


async def test_sendcmd_scope_is_required(api: Api, owner: Account) -> None:
    reader = await make_account(api.database_url, scopes=("read-only",))
    answer = await api.client.post(
        f"/v1/devices/relay-{owner.user_id}/commands", json=SAMPLE, headers=reader.headers
    )
    assert answer.status_code == 403


async def test_broker_unreachable_is_503_within_the_bounded_wait(api: Api, tmp_path: Path) -> None:
    dead = f"mqtt://127.0.0.1:{embedded.free_port()}"
    settings = api.settings.model_copy(update={"mqtt_url": dead, "command_timeout": 1.0})
    async with running_api(settings) as down:
        account = await make_account(api.database_url)
        created = await down.client.post(
            "/v1/devices",
            json={"id": f"relay-d{account.user_id}", "model": "relay-controller"},
            headers=account.headers,
        )
        assert created.status_code == 201
        started = time.monotonic()
        answer = await down.client.post(
            f"/v1/devices/relay-d{account.user_id}/commands", json=SAMPLE, headers=account.headers
        )
        assert time.monotonic() - started < 3
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "broker_unavailable"
        [record] = await command_records(down, f"relay-d{account.user_id}")
        assert record["outcome"]["status"] == "failed"
        ready = await down.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"
        assert ready.json()["error"]["message"] == "Not ready: mqtt unreachable."
        assert ready.json()["error"]["checks"]["mqtt"] is False
