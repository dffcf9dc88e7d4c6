"""Cayenne LPP codec: the spec's example, the samples, every type, round trips, random bytes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.codecs import Decoded, DecodeError, decode_uplink
from services.codecs.lpp import LPP_TYPES, decode_lpp
from services.platform.events import DataPoint, UplinkEnvelope
from tests.samples import sample

T = 1700000000.123


def outcome(
    codec: Callable[[UplinkEnvelope], Decoded], env: UplinkEnvelope
) -> Decoded | DecodeError:
    """The codec's result, or the DecodeError it raised; any other exception propagates."""
    try:
        return codec(env)
    except DecodeError as exc:
        return exc


DEV = "70B3D57ED0000001"


def envelope(payload_hex: str | None, received: float = T) -> UplinkEnvelope:
    return UplinkEnvelope(source="ttn", device=DEV, received=received, payload_hex=payload_hex)


def encode(channel: int, type_id: int, *raws: int) -> bytes:
    """One LPP record: the raw integers of the type's fields, big-endian."""
    fields = LPP_TYPES[type_id].fields
    assert len(raws) == len(fields)
    body = b"".join(
        raw.to_bytes(f.size, "big", signed=f.signed) for raw, f in zip(raws, fields, strict=True)
    )
    return bytes([channel, type_id]) + body


def test_spec_example() -> None:
    decoded = decode_lpp(envelope("03670110056700FF"))

    assert decoded.points == (
        DataPoint(DEV, T, "temperature_3", 27.2, "°C"),
        DataPoint(DEV, T, "temperature_5", 25.5, "°C"),
    )
    assert decoded.events == ()


@pytest.mark.parametrize(
    ("name", "payload_path"),
    [
        ("ttn-uplink.json", ("uplink_message", "frm_payload")),
        ("chirpstack-up.json", ("data",)),
    ],
)
def test_network_server_samples_give_the_two_temperatures(
    name: str, payload_path: tuple[str, ...]
) -> None:
    body = sample(name)
    for key in payload_path:
        body = body[key]
    payload_hex = base64.b64decode(body).hex()

    decoded = decode_uplink("lorawan-lpp", envelope(payload_hex))

    assert [(p.metric, p.value, p.unit, p.time) for p in decoded.points] == [
        ("temperature_3", 27.2, "°C", T),
        ("temperature_5", 25.5, "°C", T),
    ]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (encode(1, 0x00, 1), [("digital_in_1", 1.0, None)]),
        (encode(2, 0x01, 0), [("digital_out_2", 0.0, None)]),
        (encode(3, 0x02, -1234), [("analog_in_3", -12.34, None)]),
        (encode(4, 0x03, 32767), [("analog_out_4", 327.67, None)]),
        (encode(5, 0x65, 65535), [("illuminance_5", 65535.0, "lux")]),
        (encode(6, 0x66, 1), [("presence_6", 1.0, None)]),
        (encode(7, 0x67, -45), [("temperature_7", -4.5, "°C")]),
        (encode(8, 0x68, 97), [("humidity_8", 48.5, "%RH")]),
        (
            encode(9, 0x71, 1, -1000, 32767),
            [
                ("accelerometer_x_9", 0.001, "G"),
                ("accelerometer_y_9", -1.0, "G"),
                ("accelerometer_z_9", 32.767, "G"),
            ],
        ),
        (encode(10, 0x73, 10132), [("barometer_10", 1013.2, "hPa")]),
        (
            encode(11, 0x86, 100, -1, 0),
            [
                ("gyrometer_x_11", 1.0, "°/s"),
                ("gyrometer_y_11", -0.01, "°/s"),
                ("gyrometer_z_11", 0.0, "°/s"),
            ],
        ),
        (
            encode(12, 0x88, 523456, -12345, 123456),
            [
                ("gps_latitude_12", 52.3456, "°"),
                ("gps_longitude_12", -1.2345, "°"),
                ("gps_altitude_12", 1234.56, "m"),
            ],
        ),
    ],
)
def test_every_type(record: bytes, expected: list[tuple[str, float, str | None]]) -> None:
    decoded = decode_lpp(envelope(record.hex()))

    assert [(p.metric, p.value, p.unit) for p in decoded.points] == expected


def test_several_types_and_channels_in_one_frame_keep_their_order() -> None:
    frame = encode(1, 0x67, 215) + encode(1, 0x68, 120) + encode(2, 0x88, 0, 0, -500)

    decoded = decode_lpp(envelope(frame.hex()))

    assert [p.metric for p in decoded.points] == [
        "temperature_1",
        "humidity_1",
        "gps_latitude_2",
        "gps_longitude_2",
        "gps_altitude_2",
    ]
    assert decoded.points[-1].value == -5.0


@pytest.mark.parametrize(
    ("payload_hex", "reason"),
    [
        ("", "empty payload"),
        ("0367011", "odd number"),
        ("03", "a channel without a type"),
        ("036701", "channel 3 temperature needs 2 bytes, 1 left"),
        ("0367011005", "a channel without a type"),
        ("03670110056700", "channel 5 temperature needs 2 bytes, 1 left"),
        ("0388000000", "channel 3 gps needs 9 bytes, 3 left"),
        ("03ff0000", "unknown LPP type 0xff"),
        ("0367011003670120", "temperature_3 appears twice"),
    ],
)
def test_bad_frames_are_decode_errors(payload_hex: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_lpp(envelope(payload_hex))


# --- properties -------------------------------------------------------------------------------


@st.composite
def records(draw: st.DrawFn) -> tuple[int, int, tuple[int, ...]]:
    type_id = draw(st.sampled_from(sorted(LPP_TYPES)))
    raws = tuple(
        draw(
            st.integers(
                min_value=-(2 ** (8 * f.size - 1)) if f.signed else 0,
                max_value=2 ** (8 * f.size - 1) - 1 if f.signed else 2 ** (8 * f.size) - 1,
            )
        )
        for f in LPP_TYPES[type_id].fields
    )
    return draw(st.integers(min_value=0, max_value=255)), type_id, raws


@settings(database=None)
@given(st.lists(records(), max_size=6, unique_by=lambda r: (r[0], r[1])).filter(bool))
def test_round_trip(frame_records: list[tuple[int, int, tuple[int, ...]]]) -> None:
    frame = b"".join(encode(channel, type_id, *raws) for channel, type_id, raws in frame_records)

    points = iter(decode_lpp(envelope(frame.hex())).points)

    for channel, type_id, raws in frame_records:
        for field, raw in zip(LPP_TYPES[type_id].fields, raws, strict=True):
            point = next(points)
            assert point.metric.endswith(f"_{channel}")
            assert point.metric.startswith(LPP_TYPES[type_id].name)
            assert point.unit == field.unit
            # The shortest repr of the value is the exact decimal: no float noise.
            assert Decimal(repr(point.value)) * field.divisor == raw
    assert next(points, None) is None


@settings(database=None)
@given(st.binary(max_size=24))
def test_random_bytes_decode_or_raise_decode_error(payload: bytes) -> None:
    result = outcome(decode_lpp, envelope(payload.hex()))
    if isinstance(result, DecodeError):
        assert result.reason
    else:
        assert result.points
        assert len({p.metric for p in result.points}) == len(result.points)
