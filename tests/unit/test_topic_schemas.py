"""What the pipeline publishes matches the JSON Schemas documented for subscribers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from services.codecs import decode_uplink
from services.devices import DeviceInfo
from services.events import UplinkEnvelope
from services.ingest.sigfox import SigfoxCallback
from services.pipeline import BatchResult, plan_batch

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


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
    jsonschema.validate(envelope, schema("uplinks"))
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
    for point in plan.points:
        jsonschema.validate(roundtrip(point.to_dict()), schema("readings"))
    assert [e.type for e, _ in plan.events] == ["decode_error"]
    for event, _ in plan.events:
        jsonschema.validate(roundtrip(event.to_dict()), schema("device-events"))
    reasons = sorted(value["error"] for _, value in plan.dead)
    assert reasons[0].startswith("decode_error")
    assert reasons[1] == "unknown_device"
    for _, value in plan.dead:
        jsonschema.validate(roundtrip(value), schema("dead-letter"))


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
    jsonschema.validate(body, schema("device-events"))
    assert body["type"] == "param_ack"
    assert body["seq"] == 7


@pytest.mark.parametrize(
    "name", ["uplinks", "readings", "device-events", "commands", "dead-letter"]
)
def test_schemas_are_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))
