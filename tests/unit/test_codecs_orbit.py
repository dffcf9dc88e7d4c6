"""Orbit uplink codec: the spec's frames, round trips and random bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.codecs import Decoded, DecodeError, decode_uplink
from services.codecs.orbit_uplink import decode_orbit
from services.platform.events import DataPoint, UplinkEnvelope
from tests.samples import sample

T = 1700000000.0


def outcome(
    codec: Callable[[UplinkEnvelope], Decoded], env: UplinkEnvelope
) -> Decoded | DecodeError:
    """The codec's result, or the DecodeError it raised; any other exception propagates."""
    try:
        return codec(env)
    except DecodeError as exc:
        return exc


def envelope(payload_hex: str | None, received: float = T) -> UplinkEnvelope:
    return UplinkEnvelope(
        source="sigfox", device="1A2B3C", received=received, payload_hex=payload_hex
    )


# --- encoders (the firmware's side), for round trips ---------------------------------------


def temperature_batch(interval: int, temps_centi: list[int]) -> str:
    return (bytes([0x01, interval]) + b"".join(struct.pack(">h", t) for t in temps_centi)).hex()


def temperature_humidity_batch(interval: int, samples: list[tuple[int, int]]) -> str:
    body = b"".join(struct.pack(">hB", t, h) for t, h in samples)
    return (bytes([0x02, interval]) + body).hex()


def param_ack(seq: int, params: list[tuple[int, int]], signed: set[int] | None = None) -> str:
    signed = signed or set()
    body = b"".join(struct.pack(">Bh" if pid in signed else ">BH", pid, raw) for pid, raw in params)
    return (bytes([0x10, seq]) + body).hex()


def status(battery_mv: int, major: int, minor: int, flags: int) -> str:
    return struct.pack(">BHBBB", 0x20, battery_mv, major, minor, flags).hex()


# --- the spec's examples -------------------------------------------------------------------


def test_spec_example_frame_gives_two_points_oldest_first() -> None:
    decoded = decode_orbit(envelope("010f08fc0906"))

    assert decoded == Decoded(
        points=(
            DataPoint("1A2B3C", 1699999100, "temperature", 23.0, "°C"),
            DataPoint("1A2B3C", 1700000000, "temperature", 23.1, "°C"),
        )
    )
    assert [p.to_dict()["value"] for p in decoded.points] == [23.0, 23.1]


def test_sigfox_uplink_sample_decodes_as_its_readme_says() -> None:
    body = sample("sigfox-uplink.json")

    decoded = decode_uplink("orbit-t", envelope(body["data"], received=float(body["time"])))

    assert [(p.time, p.metric, p.value, p.unit) for p in decoded.points] == [
        (1699999100, "temperature", 23.0, "°C"),
        (1700000000, "temperature", 23.1, "°C"),
    ]


def test_quoted_downlink_request_sample_payload_is_a_one_sample_batch() -> None:
    body = sample("sigfox-downlink-request-quoted.json")

    decoded = decode_orbit(envelope(body["data"], received=float(body["time"])))

    assert decoded.points == (DataPoint("1A2B3C", 1700000600, "temperature", 23.0, "°C"),)


def test_hex_is_case_insensitive() -> None:
    assert decode_orbit(envelope("010F08FC0906")) == decode_orbit(envelope("010f08fc0906"))


# --- batches ----------------------------------------------------------------------------------


def test_batch_timestamps_follow_the_interval_rule() -> None:
    decoded = decode_orbit(envelope(temperature_batch(10, [100, 200, 300, 400, 500])))

    assert [p.time for p in decoded.points] == [T - 2400, T - 1800, T - 1200, T - 600, T]
    assert [p.value for p in decoded.points] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_negative_temperatures_are_twos_complement() -> None:
    decoded = decode_orbit(envelope(temperature_batch(15, [-1000, -1])))

    assert [p.value for p in decoded.points] == [-10.0, -0.01]


def test_temperature_humidity_batch_gives_both_metrics_per_sample() -> None:
    decoded = decode_orbit(envelope(temperature_humidity_batch(15, [(2150, 101), (-250, 200)])))

    assert decoded.points == (
        DataPoint("1A2B3C", T - 900, "temperature", 21.5, "°C"),
        DataPoint("1A2B3C", T - 900, "humidity", 50.5, "%RH"),
        DataPoint("1A2B3C", T, "temperature", -2.5, "°C"),
        DataPoint("1A2B3C", T, "humidity", 100.0, "%RH"),
    )


def test_temperature_humidity_frame_from_an_orbit_t_is_decoded_as_it_says() -> None:
    decoded = decode_uplink("orbit-t", envelope(temperature_humidity_batch(5, [(2000, 80)])))

    assert {p.metric: p.value for p in decoded.points} == {"temperature": 20.0, "humidity": 40.0}


def test_a_single_sample_may_have_interval_zero() -> None:
    decoded = decode_orbit(envelope(temperature_batch(0, [2000])))

    assert decoded.points == (DataPoint("1A2B3C", T, "temperature", 20.0, "°C"),)


@pytest.mark.parametrize(
    ("payload_hex", "reason"),
    [
        ("01", "wrong length"),
        ("010f", "0 samples"),
        ("010f08", "wrong length"),
        ("010f08fc09", "wrong length"),
        (temperature_batch(15, [1] * 6), "6 samples, expected 1..5"),
        ("020f", "0 samples"),
        ("020f08fc", "wrong length"),
        (temperature_humidity_batch(15, [(1, 1)] * 4), "4 samples, expected 1..3"),
        (temperature_batch(0, [1, 2]), "interval of 0"),
    ],
)
def test_bad_batches_are_decode_errors(payload_hex: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_orbit(envelope(payload_hex))


# --- parameter ack and status -------------------------------------------------------------------


def test_param_ack_reports_raw_and_natural_values() -> None:
    frame = param_ack(7, [(0x01, 30), (0x04, -1000), (0x05, 160)], signed={0x04})

    (event,) = decode_orbit(envelope(frame)).events

    assert (event.device, event.time, event.type) == ("1A2B3C", T, "param_ack")
    assert event.data == {
        "seq": 7,
        "params": [
            {"param": "sample_interval", "id": 1, "raw": 30, "value": 30.0},
            {"param": "temp_low", "id": 4, "raw": -1000, "value": -10.0},
            {"param": "humidity_high", "id": 5, "raw": 160, "value": 80.0},
        ],
    }


def test_param_ack_of_the_spec_downlink_example() -> None:
    # The ack a sensor sends after applying a20701001e060001 (seq 7, sample_interval=30, led=1).
    (event,) = decode_orbit(envelope("100701001e060001")).events

    assert event.data["seq"] == 7
    assert [(p["param"], p["value"]) for p in event.data["params"]] == [
        ("sample_interval", 30.0),
        ("led", 1.0),
    ]


def test_param_ack_temp_high_in_hundredths() -> None:
    (event,) = decode_orbit(envelope(param_ack(1, [(0x03, 3050)], signed={0x03}))).events

    assert event.data["params"][0]["value"] == 30.5


@pytest.mark.parametrize(
    ("payload_hex", "reason"),
    [
        ("1007", "0 parameters"),
        ("100701001e06", "wrong length"),
        (param_ack(1, [(1, 1)] * 4), "4 parameters, expected 1..3"),
    ],
)
def test_bad_param_acks_are_decode_errors(payload_hex: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_orbit(envelope(payload_hex))


def test_an_unknown_parameter_id_is_ignored_and_the_others_applied() -> None:
    # seq 7: led=1, id 0x09 (undefined), sample_interval=30
    (event,) = decode_orbit(envelope("100706000109000101001e")).events
    assert event.data == {
        "seq": 7,
        "params": [
            {"param": "led", "id": 6, "raw": 1, "value": 1},
            {"param": "sample_interval", "id": 1, "raw": 30, "value": 30},
        ],
        "ignored": [{"id": 9, "raw_hex": "0001"}],
    }
    (only_unknown,) = decode_orbit(envelope("100108001e")).events
    assert only_unknown.data == {"seq": 1, "params": [], "ignored": [{"id": 8, "raw_hex": "001e"}]}


def test_status_frame_gives_an_event_and_a_battery_point() -> None:
    decoded = decode_orbit(envelope(status(3100, 1, 12, 0b101)))

    (event,) = decoded.events
    assert (event.type, event.time) == ("status", T)
    assert event.data == {"battery_mv": 3100, "firmware": "1.12", "flags": 5}
    assert decoded.points == (DataPoint("1A2B3C", T, "battery", 3.1, "V"),)


@pytest.mark.parametrize("payload_hex", ["200c1c0102", "200c1c010200ff"])
def test_status_frame_of_the_wrong_length_is_a_decode_error(payload_hex: str) -> None:
    with pytest.raises(DecodeError, match="expected 6"):
        decode_orbit(envelope(payload_hex))


# --- payload errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_hex", "reason"),
    [
        ("", "empty payload"),
        (None, "no binary payload"),
        ("010f08fc090", "odd number of hex digits"),
        ("010f08fc09zz", "not hex"),
        ("ff00", "unknown Orbit frame type 0xff"),
        ("03", "unknown Orbit frame type 0x03"),
    ],
)
def test_bad_payloads_are_decode_errors(payload_hex: str | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as caught:
        decode_orbit(envelope(payload_hex))
    assert caught.value.reason


# --- properties -------------------------------------------------------------------------------

centi = st.integers(min_value=-32768, max_value=32767)


@settings(database=None)
@given(
    interval=st.integers(min_value=1, max_value=255),
    temps=st.lists(centi, min_size=1, max_size=5),
    received=st.floats(min_value=1e9, max_value=2e9),
)
def test_temperature_batch_round_trip(interval: int, temps: list[int], received: float) -> None:
    decoded = decode_orbit(envelope(temperature_batch(interval, temps), received=received))

    assert [Decimal(repr(p.value)) * 100 for p in decoded.points] == temps  # no float noise
    n = len(temps)
    assert [p.time for p in decoded.points] == [
        received - (n - 1 - i) * interval * 60 for i in range(n)
    ]
    assert decoded.points[-1].time == received


@settings(database=None)
@given(
    interval=st.integers(min_value=1, max_value=255),
    samples=st.lists(
        st.tuples(centi, st.integers(min_value=0, max_value=255)), min_size=1, max_size=3
    ),
)
def test_temperature_humidity_round_trip(interval: int, samples: list[tuple[int, int]]) -> None:
    decoded = decode_orbit(envelope(temperature_humidity_batch(interval, samples)))

    temps = [p.value for p in decoded.points if p.metric == "temperature"]
    hums = [p.value for p in decoded.points if p.metric == "humidity"]
    assert [Decimal(repr(v)) * 100 for v in temps] == [t for t, _ in samples]
    assert [v * 2 for v in hums] == [h for _, h in samples]


@settings(database=None)
@given(
    seq=st.integers(min_value=0, max_value=255),
    raws=st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=1, max_size=3),
)
def test_param_ack_round_trip_of_unsigned_params(seq: int, raws: list[int]) -> None:
    params = list(zip([0x01, 0x02, 0x06], raws, strict=False))

    (event,) = decode_orbit(envelope(param_ack(seq, params))).events

    assert event.data["seq"] == seq
    assert [(p["id"], p["raw"]) for p in event.data["params"]] == params


@settings(database=None)
@given(st.binary(max_size=14))
def test_random_bytes_decode_or_raise_decode_error(payload: bytes) -> None:
    result = outcome(decode_orbit, envelope(payload.hex()))
    if isinstance(result, DecodeError):
        assert result.reason
    else:
        assert result.points or result.events
        assert all(p.device == "1A2B3C" and p.time <= T for p in result.points)


@settings(database=None)
@given(st.text(max_size=30))
def test_random_text_as_hex_decodes_or_raises_decode_error(payload_hex: str) -> None:
    result = outcome(decode_orbit, envelope(payload_hex))
    if isinstance(result, DecodeError):
        assert result.reason
    else:
        assert result.points or result.events
