"""send_command with the fake MQTT publisher and the fake Kafka publisher."""

from __future__ import annotations

import orjson
import pytest

from services.commands.publishing import (
    BrokerUnavailable,
    FakeCommandPublisher,
    NoBroker,
    command_topic,
    parse_mqtt_url,
    send_command,
)
from services.commands.validation import CommandInvalid
from services.platform.kafka import FakePublisher

SAMPLE = {"Output": "Relay", "Relays": [{"relay": "SecurityAlarm", "state": 1, "id": "255.1"}]}


async def _send(mqtt: object, kafka: FakePublisher, payload: object) -> dict[str, object]:
    return await send_command(
        mqtt=mqtt,  # type: ignore[arg-type]
        kafka=kafka,
        topic_prefix="devices",
        kafka_topic="hivepipe.commands",
        device_id="relay-1",
        payload=payload,
        ack_wait=1.0,
    )


async def test_published_as_is_on_the_device_topic_and_recorded() -> None:
    mqtt, kafka = FakeCommandPublisher(), FakePublisher()
    record = await _send(mqtt, kafka, SAMPLE)
    assert mqtt.sent == [("devices/relay-1/command", orjson.dumps(SAMPLE))]
    [(topic, key, value)] = kafka.sent
    assert (topic, key) == ("hivepipe.commands", "relay-1")
    assert orjson.loads(value) == record
    assert record["kind"] == "command"
    assert record["payload"] == SAMPLE
    assert record["outcome"] == {"status": "sent"}
    assert set(record) == {"id", "device", "kind", "payload", "requested", "outcome"}


async def test_quoted_states_are_published_as_numbers() -> None:
    mqtt, kafka = FakeCommandPublisher(), FakePublisher()
    await _send(mqtt, kafka, {"Output": "Relay", "Relays": [{"relay": "A", "state": "0"}]})
    assert orjson.loads(mqtt.sent[0][1])["Relays"][0]["state"] == 0


async def test_invalid_command_sends_nothing() -> None:
    mqtt, kafka = FakeCommandPublisher(), FakePublisher()
    with pytest.raises(CommandInvalid):
        await _send(mqtt, kafka, {"Relays": []})
    assert mqtt.sent == []
    assert kafka.sent == []


async def test_broker_down_is_reported_and_recorded_as_failed() -> None:
    mqtt, kafka = FakeCommandPublisher(), FakePublisher()
    mqtt.fail = True
    with pytest.raises(BrokerUnavailable):
        await _send(mqtt, kafka, SAMPLE)
    [(_, _, value)] = kafka.sent
    assert orjson.loads(value)["outcome"]["status"] == "failed"
    with pytest.raises(BrokerUnavailable):
        await _send(NoBroker(), FakePublisher(), SAMPLE)


async def test_kafka_down_does_not_undo_a_sent_command() -> None:
    mqtt, kafka = FakeCommandPublisher(), FakePublisher()
    kafka.fail = True
    record = await _send(mqtt, kafka, SAMPLE)
    assert record["outcome"] == {"status": "sent"}
    assert len(mqtt.sent) == 1


def test_topic_and_broker_url() -> None:
    assert command_topic("devices", "R1") == "devices/R1/command"
    plain = parse_mqtt_url("mqtt://127.0.0.1:1884")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("127.0.0.1", 1884, False, None)
    secure = parse_mqtt_url("mqtts://u%40x:p%3A@broker")
    assert (secure.host, secure.port, secure.tls) == ("broker", 8883, True)
    assert (secure.username, secure.password) == ("u@x", "p:")
    assert parse_mqtt_url("broker:1883").host == "broker"
