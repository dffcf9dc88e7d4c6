"""Parsing of every way an uplink arrives, on the shared samples (no I/O)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.codecs import decode_uplink
from services.platform.events import UplinkEnvelope
from services.uplinks.chirpstack import ChirpstackAck, ChirpstackTxAck, ChirpstackUp
from services.uplinks.lorawan import base64_to_hex, parse_rfc3339
from services.uplinks.mqtt_messages import Rejected, mqtt_uplink, parse_topic, subscriptions
from services.uplinks.sigfox import SigfoxCallback
from services.uplinks.ttn import TtnDownlinkReport, TtnUplink, message_type
from tests.samples import sample


def points(model: str, envelope: UplinkEnvelope) -> list[tuple[float, str, float]]:
    return sorted((p.time, p.metric, p.value) for p in decode_uplink(model, envelope).points)


# -- Sigfox -------------------------------------------------------------------------------------


def test_sigfox_sample() -> None:
    callback = SigfoxCallback.model_validate(sample("sigfox-uplink.json"))
    envelope = callback.envelope()
    assert envelope.source == "sigfox"
    assert envelope.device == "1A2B3C"
    assert envelope.received == 1700000000.0
    assert envelope.payload_hex == "010f08fc0906"
    assert envelope.meta == {
        "seq": 1,
        "station": "0A1B",
        "rssi": -121.5,
        "snr": 12.3,
        "device_type": "5f1a2b3c4d5e6f7a8b9c0d1e",
    }
    assert envelope.downlink_requested is False
    assert callback.dedup_key == "sigfox:1A2B3C:1"
    assert points("orbit-t", envelope) == [
        (1699999100, "temperature", 23.0),
        (1700000000, "temperature", 23.1),
    ]


def test_sigfox_quoted_values() -> None:
    callback = SigfoxCallback.model_validate(sample("sigfox-downlink-request-quoted.json"))
    assert callback.device == "1A2B3C"
    assert callback.time == 1700000600
    assert callback.seq_number == 2
    assert callback.ack is True
    assert callback.envelope().downlink_requested is True
    assert callback.dedup_key == "sigfox:1A2B3C:2"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"device": "1A2B3G"}, "device"),
        ({"device": "123456789"}, "device"),
        ({"device": ""}, "device"),
        ({"device": "1A2B3C\n"}, "device"),
        ({"data": "010f08fc0906\n"}, "data"),
        ({"data": "0"}, "data"),
        ({"data": "zz"}, "data"),
        ({"data": "00" * 13}, "data"),
        ({"seqNumber": -1}, "seqNumber"),
        ({"seqNumber": 2**32}, "seqNumber"),
        ({"time": 2**40}, "time"),
        ({"rssi": "NaN"}, "rssi"),
        ({"ack": "perhaps"}, "ack"),
    ],
)
def test_sigfox_refuses(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SigfoxCallback.model_validate({**sample("sigfox-uplink.json"), **change})
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_sigfox_empty_data_and_missing_options() -> None:
    callback = SigfoxCallback.model_validate(
        {"device": "ab", "time": "1700000000", "seqNumber": "4095", "data": ""}
    )
    assert callback.envelope().meta == {"seq": 4095}
    assert callback.envelope().payload_hex == ""


# -- The Things Stack ---------------------------------------------------------------------------


def test_ttn_sample() -> None:
    body = sample("ttn-uplink.json")
    assert message_type(body) == "uplink_message"
    uplink = TtnUplink.model_validate(body)
    envelope = uplink.envelope()
    assert envelope.source == "ttn"
    assert envelope.device == "70B3D57ED0000001"
    assert envelope.received == 1700000000.123  # top-level received_at, nanoseconds rounded
    assert envelope.payload_hex == "03670110056700ff"
    assert envelope.meta["f_cnt"] == 0
    assert envelope.meta["f_port"] == 1
    assert envelope.meta["gateway"] == "gw-roof"
    assert uplink.dedup_key == "lorawan:70B3D57ED0000001:AYvZ2e3kT2qXj4cB6eE7hQ==:0"
    assert points("lorawan-lpp", envelope) == [
        (1700000000.123, "temperature_3", 27.2),
        (1700000000.123, "temperature_5", 25.5),
    ]


def test_ttn_lower_case_dev_eui_and_omitted_fields() -> None:
    body = sample("ttn-uplink.json")
    body["end_device_ids"]["dev_eui"] = "70b3d57ed0000001"
    body["uplink_message"] = {"f_port": 2}  # no payload, no metadata
    del body["received_at"]
    envelope = TtnUplink.model_validate(body).envelope()
    assert envelope.device == "70B3D57ED0000001"
    assert envelope.payload_hex == ""
    assert envelope.meta == {
        "f_cnt": 0,
        "f_port": 2,
        "device_id": "lpp-node-1",
        "dev_addr": "260B1234",
        "application_id": "cold-chain",
    }


def test_ttn_best_gateway_is_the_strongest() -> None:
    body = sample("ttn-uplink.json")
    body["uplink_message"]["rx_metadata"] = [
        {"gateway_ids": {"gateway_id": "far"}, "rssi": -120, "snr": -5},
        {"gateway_ids": {"gateway_id": "near"}, "rssi": -60, "snr": 10},
        {"gateway_ids": {"gateway_id": "packet-broker"}},
    ]
    meta = TtnUplink.model_validate(body).envelope().meta
    assert (meta["gateway"], meta["rssi"], meta["snr"], meta["gateways"]) == ("near", -60, 10, 3)


def test_an_omitted_snr_is_zero_unless_the_reception_has_no_metadata() -> None:
    body = sample("ttn-uplink.json")
    body["uplink_message"]["rx_metadata"] = [{"gateway_ids": {"gateway_id": "gw"}, "rssi": -80}]
    meta = TtnUplink.model_validate(body).envelope().meta
    assert (meta["rssi"], meta["snr"]) == (-80, 0.0)  # Protobuf JSON leaves zero out
    up = sample("chirpstack-up.json")
    up["rxInfo"] = [{"gatewayId": "0016c001ff10a235", "rssi": -70}]
    assert ChirpstackUp.model_validate(up).envelope().meta["snr"] == 0.0
    body["uplink_message"]["rx_metadata"] = [{"gateway_ids": {"gateway_id": "packet-broker"}}]
    meta = TtnUplink.model_validate(body).envelope().meta
    assert "rssi" not in meta
    assert "snr" not in meta


def test_ttn_requires_a_dev_eui() -> None:
    body = sample("ttn-uplink.json")
    del body["end_device_ids"]["dev_eui"]
    with pytest.raises(ValidationError) as info:
        TtnUplink.model_validate(body)
    assert info.value.errors()[0]["loc"] == ("end_device_ids",)


def test_ttn_refuses_a_dev_eui_with_a_trailing_newline() -> None:
    body = sample("ttn-uplink.json")
    body["end_device_ids"]["dev_eui"] += "\n"
    with pytest.raises(ValidationError):
        TtnUplink.model_validate(body)


def test_ttn_downlink_failed_event() -> None:
    body = {
        "end_device_ids": sample("ttn-uplink.json")["end_device_ids"],
        "received_at": "2023-11-14T22:20:00Z",
        "downlink_failed": {
            "downlink": {"f_port": 15, "frm_payload": "AQI=", "priority": "NORMAL"},
            "error": {"namespace": "pkg/networkserver", "name": "device_not_found", "code": 5},
        },
    }
    assert message_type(body) == "downlink_failed"
    event = TtnDownlinkReport.model_validate(body).device_event("downlink_failed")
    assert event.to_dict() == {
        "device": "70B3D57ED0000001",
        "time": 1700000400.0,
        "type": "downlink_failed",
        "source": "ttn",
        "f_port": 15,
        "frm_payload": "AQI=",
        "priority": "NORMAL",
        "error": {"namespace": "pkg/networkserver", "name": "device_not_found", "code": 5},
    }


def test_ttn_message_types() -> None:
    assert message_type({"join_accept": {}}) == "join_accept"
    assert message_type({"downlink_sent": {}}) == "downlink_sent"
    assert message_type({"end_device_ids": {}}) is None


# -- ChirpStack ---------------------------------------------------------------------------------


def test_chirpstack_up_sample() -> None:
    up = ChirpstackUp.model_validate(sample("chirpstack-up.json"))
    envelope = up.envelope()
    assert envelope.source == "chirpstack"
    assert envelope.device == "70B3D57ED0000002"
    assert envelope.received == 1700000000.101
    assert envelope.payload_hex == "03670110056700ff"
    assert envelope.meta["f_cnt"] == 10
    assert envelope.meta["gateway"] == "0016c001f153a14c"
    assert up.dedup_key == "chirpstack:3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
    assert points("lorawan-lpp", envelope) == [
        (1700000000.101, "temperature_3", 27.2),
        (1700000000.101, "temperature_5", 25.5),
    ]


def test_chirpstack_up_without_deduplication_id_uses_the_frame_counter() -> None:
    body = sample("chirpstack-up.json")
    del body["deduplicationId"], body["fCnt"]
    assert ChirpstackUp.model_validate(body).dedup_key == "lorawan:70B3D57ED0000002::0"


def test_chirpstack_ack_sample() -> None:
    event = ChirpstackAck.model_validate(sample("chirpstack-ack.json")).device_event()
    assert event.to_dict() == {
        "device": "70B3D57ED0000002",
        "time": 1700000101.0,
        "type": "downlink_ack",
        "source": "chirpstack",
        "acknowledged": True,
        "fCntDown": 7,
        "queueItemId": "5e9b7c4c-2d57-4b39-b4d4-1e0b4a8a9c3d",
    }
    body = {**sample("chirpstack-ack.json")}
    del body["acknowledged"]  # false is omitted in protobuf JSON
    assert ChirpstackAck.model_validate(body).device_event().type == "downlink_nack"


def test_chirpstack_txack() -> None:
    body = {
        "downlinkId": 1234,
        "time": "2023-11-14T22:15:00Z",
        "deviceInfo": {"devEui": "70b3d57ed0000002"},
        "queueItemId": "q1",
        "fCntDown": 7,
        "gatewayId": "0016c001f153a14c",
    }
    event = ChirpstackTxAck.model_validate(body).device_event()
    assert event.type == "downlink_sent_ns"
    assert event.data == {
        "source": "chirpstack",
        "fCntDown": 7,
        "queueItemId": "q1",
        "downlinkId": 1234,
        "gatewayId": "0016c001f153a14c",
    }


# -- times and base64 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20.123456789Z", 1700000000.123),
        ("2023-11-14T22:13:20.101233+00:00", 1700000000.101),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T23:13:20.9996+01:00", 1700000001.0),
        ("2023-11-14t22:13:20.5z", 1700000000.5),
        ("2023-11-14 22:13:20.0005Z", 1700000000.001),
    ],
)
def test_rfc3339(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2023-02-30T00:00:00Z", "2023-11-14T22:13:20", "1969-12-31T23:59:59Z"]
)
def test_rfc3339_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="."):
        parse_rfc3339(text)


@given(st.text(max_size=40))
def test_rfc3339_raises_only_value_error(text: str) -> None:
    try:
        value = parse_rfc3339(text)
    except ValueError:
        return
    assert 0 <= value < 2**32


def test_base64() -> None:
    assert base64_to_hex("A2cBEAVnAP8=") == "03670110056700ff"
    assert base64_to_hex("") == ""
    with pytest.raises(ValueError, match="base64"):
        base64_to_hex("A2cB*")


# -- MQTT ---------------------------------------------------------------------------------------


def test_mqtt_topics() -> None:
    assert parse_topic("devices/sensor-1/up", "devices") == ("sensor-1", "up")
    assert parse_topic("site/a/devices/relay.7/state", "site/a/devices") == ("relay.7", "state")
    for bad in (
        "devices/x/down",
        "devices//up",
        "devices/a/b/up",
        "other/x/up",
        "devices/é/up",
        "devices/x\n/up",
    ):
        assert parse_topic(bad, "devices") is None
    assert subscriptions("devices", group="hivepipe") == [
        "$share/hivepipe/devices/+/up",
        "$share/hivepipe/devices/+/state",
    ]
    assert subscriptions("devices", group=None) == ["devices/+/up", "devices/+/state"]


def test_mqtt_up_and_state() -> None:
    up = mqtt_uplink(
        "devices/sensor-1/up",
        b'{"time": 1700000000, "values": {"temperature": 21.5}}',
        prefix="devices",
        received=1700000001.23456,
        max_bytes=65536,
    )
    assert isinstance(up, UplinkEnvelope)
    assert (up.source, up.device, up.received) == ("mqtt", "sensor-1", 1700000001.235)
    assert up.payload_json == {"time": 1700000000, "values": {"temperature": 21.5}}
    assert up.meta == {"kind": "up", "topic": "devices/sensor-1/up"}
    assert points("json", up) == [(1700000000, "temperature", 21.5)]
    state = mqtt_uplink(
        "devices/relay-1/state",
        orjson.dumps(sample("relay-state.json")),
        prefix="devices",
        received=1700000000,
        max_bytes=65536,
    )
    assert isinstance(state, UplinkEnvelope)
    assert state.meta["kind"] == "state"
    assert decode_uplink("relay-controller", state).state == sample("relay-state.json")


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "kept"),
    [
        ("devices/s/up", b"{nope", "invalid_json", {"payload_text": "{nope"}),
        ("devices/s/up", b"\xff\x00", "invalid_json", {"payload_base64": "/wA="}),
        ("devices/s/up", b"[" * 100 + b"]" * 100, "payload_too_large", {"payload_size": 200}),
        ("devices/s/sideways", b"{}", "invalid_topic", {"payload_text": "{}"}),
    ],
)
def test_mqtt_rejections(topic: str, payload: bytes, reason: str, kept: dict[str, Any]) -> None:
    result = mqtt_uplink(topic, payload, prefix="devices", received=1.0, max_bytes=100)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.record["error"].startswith(reason)
    assert result.record["source"] == "mqtt"
    assert result.record["meta"]["topic"] == topic
    for key, value in kept.items():
        assert result.record[key] == value
    orjson.dumps(result.record)  # always serialisable


@settings(max_examples=200)
@given(topic=st.text(max_size=40), payload=st.binary(max_size=64))
def test_mqtt_any_message_is_an_envelope_or_a_dead_letter(topic: str, payload: bytes) -> None:
    result = mqtt_uplink(topic, payload, prefix="devices", received=1.0, max_bytes=32)
    assert isinstance(result, UplinkEnvelope | Rejected)
    orjson.dumps(result.to_dict() if isinstance(result, UplinkEnvelope) else result.record)


# -- every model takes any JSON without crashing ------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (SigfoxCallback, "sigfox-uplink.json"),
        (TtnUplink, "ttn-uplink.json"),
        (ChirpstackUp, "chirpstack-up.json"),
        (ChirpstackAck, "chirpstack-ack.json"),
    ],
)
def test_models_validate_or_refuse(model: Any, name: str) -> None:
    base = sample(name)

    @settings(max_examples=150, deadline=None)
    @given(key=st.sampled_from([*base, "x"]), value=JSON)
    def check(key: str, value: Any) -> None:
        try:
            parsed = model.model_validate({**base, key: value})
        except ValidationError:
            return
        envelope = parsed.device_event() if model is ChirpstackAck else parsed.envelope()
        orjson.dumps(envelope.to_dict())  # what is accepted can always be published

    check()


def test_mqtt_payload_too_deep_to_publish_is_a_dead_letter() -> None:
    deep = b"[" * 300 + b"]" * 300  # orjson reads it, but would not write it back
    result = mqtt_uplink("devices/s/up", deep, prefix="devices", received=1.0, max_bytes=65536)
    assert isinstance(result, Rejected)
    assert result.reason == "invalid_json"
