"""What the pipeline publishes matches the JSON Schemas documented for subscribers."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from services.codecs import decode_uplink
from services.commands.publishing import command_record
from services.devices.directory import DeviceInfo
from services.orbit.state import Outcome
from services.platform.events import DeviceEvent, UplinkEnvelope
from services.readings.pipeline import BatchResult, plan_batch
from services.uplinks.sigfox import SigfoxCallback
from services.uplinks.sigfox_downlink import downlink_sent_event
from tests.schemas import check, schema


def roundtrip(value: object) -> Any:
    return orjson.loads(orjson.dumps(value))


def test_sigfox_envelope_matches_uplinks_schema() -> None:
    callback = SigfoxCallback.model_validate(
        {
            "device": "1a2b3c",
            "time": "1700000000",
            "data": "010F08FC0906",
            "seqNumber": "3",
            "ack": "true",
            "station": "0A1B",
            "rssi": -121.5,
        }
    )
    envelope = roundtrip(callback.envelope().to_dict())
    check("uplinks", envelope)
    assert envelope["device"] == "1A2B3C"
    assert envelope["payload_hex"] == "010f08fc0906"
    assert envelope["downlink_requested"] is True


def test_readings_events_and_dead_letters_match_their_schemas() -> None:
    good = UplinkEnvelope(
        source="sigfox",
        device="1A2B3C",
        received=1700000000.0,
        payload_hex="010f08fc0906",
        meta={"seq": 1},
    )
    bad = UplinkEnvelope(
        source="sigfox", device="1A2B3C", received=1700000000.0, payload_hex="ff", meta={"seq": 2}
    )
    stranger = UplinkEnvelope(
        source="sigfox",
        device="FFFF",
        received=1700000000.0,
        payload_hex="010f08fc",
        meta={"seq": 1},
    )
    devices = {"1A2B3C": DeviceInfo("1A2B3C", "orbit-t", 1, True)}
    plan = plan_batch([good, bad, stranger], devices, BatchResult())
    assert len(plan.points) == 2
    assert len(plan.readings) == 1  # one message per uplink, with its points
    for _, message in plan.readings:
        check("readings", roundtrip({**message, "stored": 1700000000.5}))
        assert message["uplink"] == good.id
        assert [p["metric"] for p in message["points"]] == [p.metric for p in plan.points]
    assert [e.type for e, _ in plan.events] == ["decode_error"]
    for event, _ in plan.events:
        check("device-events", roundtrip(event.to_dict()))
    reasons = sorted(value["error"] for _, value in plan.dead)
    assert reasons[0].startswith("decode_error")
    assert reasons[1] == "unknown_device"
    for _, value in plan.dead:
        check("dead-letter", roundtrip(value))


def test_orbit_ack_event_matches_device_events_schema() -> None:
    envelope = UplinkEnvelope(
        source="sigfox",
        device="1A2B3C",
        received=1700000000.0,
        payload_hex="100701001e060001",
        meta={"seq": 9},
    )
    (event,) = decode_uplink("orbit-t", envelope).events
    body = roundtrip(event.to_dict())
    check("device-events", body)
    assert body["type"] == "param_ack"
    assert body["seq"] == 7


@pytest.mark.parametrize(
    "name", ["uplinks", "readings", "device-events", "commands", "dead-letter"]
)
def test_schemas_are_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))


def test_orbit_queue_events_match_device_events_schema() -> None:
    outcomes = [
        Outcome("param_queued", "temp_high", 3050),
        Outcome("param_replaced", "temp_high", 3100, previous_raw=3050),
        Outcome("param_dropped", "led", 1, reason="equals the active value"),
        Outcome("param_acked", "temp_high", 3000, seq=7, requested_raw=3100),
        Outcome("param_failed", "led", 1, seq=8, attempts=3),
    ]
    for outcome in outcomes:
        body = roundtrip(
            DeviceEvent("1A2B3C", 1700000000.0, outcome.kind, outcome.event_data()).to_dict()
        )
        check("device-events", body)
    assert body["value"] == 1
    assert body["attempts"] == 3


def test_downlink_sent_event_matches_device_events_schema() -> None:
    body = roundtrip(downlink_sent_event("1A2B3C", "a20701001e060001", 123, 1.7e9).to_dict())
    check("device-events", body)
    assert body["params"] == {"sample_interval": 30, "led": 1}
    # The schema tells the two shapes of `params` apart by the event's type.
    with pytest.raises(jsonschema.ValidationError):
        check("device-events", {**body, "type": "param_ack"})
    with pytest.raises(jsonschema.ValidationError):
        check("device-events", {**body, "params": [{"param": "led"}]})


@pytest.mark.parametrize(
    ("kind", "payload", "outcome"),
    [
        ("command", {"Output": "Relay"}, {"status": "sent"}),
        ("command", {"Output": "Relay"}, {"status": "failed", "reason": "no broker"}),
        (
            "downlink",
            {"port": 1, "payload_hex": "01"},
            {"status": "queued", "network_server": "tts", "answer": {"status": 200}},
        ),
        ("downlink_clear", {}, {"status": "cleared", "network_server": "tts", "cleared": 2}),
    ],
)
def test_command_records_match_commands_schema(
    kind: str, payload: dict[str, Any], outcome: dict[str, Any]
) -> None:
    record = command_record(
        device="1A2B3C", kind=kind, payload=payload, requested=1.7e9, outcome=outcome
    )
    check("commands", roundtrip(record))


def test_commands_schema_refuses_an_unknown_kind() -> None:
    record = command_record(
        device="1A2B3C", kind="reboot", payload={}, requested=1.7e9, outcome={"status": "sent"}
    )
    with pytest.raises(jsonschema.ValidationError):
        check("commands", roundtrip(record))
