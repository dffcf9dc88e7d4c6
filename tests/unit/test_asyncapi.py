"""docs/asyncapi.json is generated from the code, is a valid AsyncAPI 3.0 document, and what the
pipeline publishes matches the message schemas it states."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from services.commands.publishing import command_record
from services.devices.directory import DeviceInfo
from services.entrypoints import asyncapi
from services.platform.events import PUBLIC_TOPICS, UplinkEnvelope
from services.platform.settings import Settings
from services.readings.pipeline import BatchResult, plan_batch
from services.uplinks.sigfox import SigfoxCallback
from services.uplinks.sigfox_downlink import downlink_sent_event
from tests.schemas import asyncapi_document
from tests.schemas import check_asyncapi as check

#: The official JSON Schema of AsyncAPI 3.0.0 (tests/data/README.md says where it comes from).
ASYNCAPI_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "asyncapi-3.0.0.schema.json"


def committed() -> dict[str, Any]:
    return asyncapi_document()


def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def test_the_committed_document_is_the_generated_one() -> None:
    assert asyncapi.OUTPUT.read_text(encoding="utf-8") == asyncapi.render(), (
        "docs/asyncapi.json is out of date: run `make docs`"
    )


def test_the_document_is_valid_asyncapi_3() -> None:
    validator = asyncapi_validator()
    validator.validate(committed())
    # The schema does catch a broken document (it is not vacuous).
    broken = copy.deepcopy(committed())
    broken["operations"]["publish-readings"]["action"] = "publish"  # AsyncAPI 2's word
    del broken["info"]["version"]
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_public_topic_is_a_channel_with_its_prefixed_name_and_key() -> None:
    settings = Settings()
    channels = committed()["channels"]
    assert sorted(channels) == sorted(PUBLIC_TOPICS)
    for name, channel in channels.items():
        assert channel["address"] == settings.topic(name)
        assert channel["bindings"]["kafka"]["topic"] == settings.topic(name)
        (ref,) = channel["messages"].values()
        message = committed()["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        assert "device id" in message["bindings"]["kafka"]["key"]["description"]
        assert message["contentType"] == "application/json"
    assert {s["protocol"] for s in committed()["servers"].values()} == {"kafka"}


def test_published_messages_match_the_documents_schemas() -> None:
    envelope = SigfoxCallback.model_validate(
        {"device": "1a2b3c", "time": "1700000000", "data": "010F08FC0906", "seqNumber": "3"}
    ).envelope()
    check("uplinks", envelope.device, orjson.dumps(envelope.to_dict()))
    good = UplinkEnvelope(
        source="sigfox", device="1A2B3C", received=1.7e9, payload_hex="010f08fc0906"
    )
    bad = UplinkEnvelope(source="sigfox", device="1A2B3C", received=1.7e9, payload_hex="ff")
    stranger = UplinkEnvelope(source="sigfox", device="FFFF", received=1.7e9, payload_hex="01")
    devices = {"1A2B3C": DeviceInfo("1A2B3C", "orbit-t", 1, True)}
    plan = plan_batch([good, bad, stranger], devices, BatchResult())
    assert plan.readings
    assert plan.events
    assert len(plan.dead) == 2
    for device, message in plan.readings:  # one message per uplink; `stored` when published
        check("readings", device, orjson.dumps({**message, "stored": 1.7e9}))
    for event, _ in plan.events:
        check("device-events", event.device, orjson.dumps(event.to_dict()))
    sent = downlink_sent_event("1A2B3C", "a20701001e060001", 123, 1.7e9)
    check("device-events", sent.device, orjson.dumps(sent.to_dict()))
    for device, value in plan.dead:
        check("dead-letter", device, orjson.dumps(value))
    record = command_record(
        device="1A2B3C", kind="command", payload={}, requested=1.7e9, outcome={"status": "sent"}
    )
    check("commands", record["device"], orjson.dumps(record))


def test_the_documents_schemas_refuse_what_the_pipeline_never_sends() -> None:
    with pytest.raises(jsonschema.ValidationError):
        check("readings", "1A2B3C", b'{"device": "1A2B3C", "time": 1, "points": []}')
    with pytest.raises(jsonschema.ValidationError):
        check("device-events", "1A2B3C", b'{"device": "1A2B3C", "time": 1, "type": "param_ack"}')
