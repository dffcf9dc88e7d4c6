"""The pure parts of the Orbit ack path: what the decode step adds to an Orbit uplink, and which
``device-events`` messages the ack agent takes for acks."""

from __future__ import annotations

import orjson
import pytest

from services.codecs import decode_uplink
from services.orbit.changes import Ack, orbit_uplink
from services.platform.events import DeviceEvent, UplinkEnvelope
from services.uplinks.sigfox_downlink import downlink_sent_event
from stream.orbit_acks import parse_ack, read_acks


def envelope(data: str, *, seq: object = 101, source: str = "sigfox") -> UplinkEnvelope:
    return UplinkEnvelope(
        source=source,  # type: ignore[arg-type]
        device="1A2B3C",
        received=1700000600.0,
        payload_hex=data,
        meta={"seq": seq},
    )


def test_an_ack_uplink_tags_its_event_and_is_not_counted_here() -> None:
    env = envelope("100101001e060001")
    events, counted = orbit_uplink("orbit-t", env, decode_uplink("orbit-t", env).events)
    assert counted is None  # the ack agent counts it, after applying the ack
    [event] = events
    assert event.type == "param_ack"
    assert event.data["uplink_seq"] == 101
    assert event.data["seq"] == 1


def test_a_plain_orbit_uplink_is_counted() -> None:
    env = envelope("010f08fc")
    events, counted = orbit_uplink("orbit-t", env, decode_uplink("orbit-t", env).events)
    assert events == []
    assert counted == ("1A2B3C", 101, 1700000600.0)


@pytest.mark.parametrize(
    ("model", "env"),
    [
        ("lorawan-lpp", envelope("010f08fc")),
        ("orbit-t", envelope("010f08fc", source="mqtt")),
        ("orbit-t", envelope("010f08fc", seq=None)),
        ("orbit-t", envelope("010f08fc", seq="7")),
        ("orbit-t", envelope("010f08fc", seq=2**31)),
    ],
)
def test_other_uplinks_pass_unchanged(model: str, env: UplinkEnvelope) -> None:
    ack = DeviceEvent("1A2B3C", 1.0, "param_ack", {"seq": 1, "params": []})
    assert orbit_uplink(model, env, [ack]) == ([ack], None)


def ack_event(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "device": "1a2b3c",
        "time": 1700000600.0,
        "type": "param_ack",
        "seq": 1,
        "params": [
            {"param": "sample_interval", "id": 1, "raw": 30, "value": 30.0},
            {"param": "led", "id": 6, "raw": 1, "value": 1.0},
        ],
        "uplink_seq": 101,
    }
    event.update(changes)
    return event


def test_parse_ack() -> None:
    assert parse_ack(ack_event()) == Ack(
        device="1A2B3C", time=1700000600.0, seq=1, params=((1, 30), (6, 1)), uplink_seq=101
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"uplink_seq": None},
        {"uplink_seq": -1},
        {"uplink_seq": True},
        {"seq": 256},
        {"seq": "1"},
        {"time": "soon"},
        {"time": float("inf")},
        {"params": [{"id": 1}]},
        {"params": None},
        {"params": [{"id": 1, "raw": 70000}]},
    ],
)
def test_an_unusable_ack_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_ack(ack_event(**changes))


def test_read_acks_takes_param_acks_only() -> None:
    without_seq = ack_event()
    del without_seq["uplink_seq"]
    values = [
        orjson.dumps(ack_event()),
        b"{broken",
        orjson.dumps([1, 2]),
        orjson.dumps({"device": "1A2B3C", "time": 1.0, "type": "param_acked", "seq": 1}),
        orjson.dumps({"device": "1A2B3C", "time": 1.0, "type": "status"}),
        orjson.dumps(without_seq),
        orjson.dumps(ack_event(uplink_seq=102, seq=2)),
    ]
    assert [(a.seq, a.uplink_seq) for a in read_acks(values)] == [(1, 101), (2, 102)]


def test_downlink_sent_event_matches_what_the_store_records() -> None:
    event = downlink_sent_event("1A2B3C", "a20101001e060001", 2, 1700000600.0)
    assert event.to_dict() == {
        "device": "1A2B3C",
        "time": 1700000600.0,
        "type": "downlink_sent",
        "seq": 1,
        "frame": "a20101001e060001",
        "params": {"sample_interval": 30, "led": 1},
        "sigfox_seq_number": 2,
    }
