"""Orbit sensor uplink frames (``shared/specs/orbit-protocol.md``, "Uplink frames").

| type | layout | length |
|---|---|---|
| 0x01 | ``interval:u8`` then n x ``temp:i16`` (0.01 °C), n = 1..5 | 2+2n |
| 0x02 | ``interval:u8`` then n x (``temp:i16``, ``hum:u8`` 0.5 %RH), n = 1..3 | 2+3n |
| 0x10 | ``seq:u8`` then k x (``param:u8``, ``value:2 bytes``), k = 1..3 | 2+3k |
| 0x20 | ``battery_mv:u16`` ``fw_major:u8`` ``fw_minor:u8`` ``flags:u8`` | 6 |

All integers are big-endian. Metrics: ``temperature`` (°C), ``humidity`` (%RH), ``battery`` (V).
"""

from __future__ import annotations

from typing import Any

from services.codecs.base import Decoded, DecodeError, payload_bytes
from services.orbit import FRAME_PARAM_ACK, InvalidFrame, count_records, read_param_ack
from services.platform import DataPoint, DeviceEvent, UplinkEnvelope

FRAME_TEMPERATURE = 0x01
FRAME_TEMPERATURE_HUMIDITY = 0x02
FRAME_STATUS = 0x20


def decode_orbit(envelope: UplinkEnvelope) -> Decoded:
    """Decode one Orbit uplink (any Orbit model) from ``envelope.payload_hex``.

    Batch frames give one point per sample, oldest first, the newest at ``envelope.received``
    (the Sigfox network time). A parameter ack gives a ``param_ack`` event, a status frame a
    ``status`` event and a ``battery`` point. Anything else raises :class:`DecodeError`.
    """
    frame = payload_bytes(envelope)
    frame_type = frame[0]
    if frame_type == FRAME_TEMPERATURE:
        return Decoded(points=_temperature_batch(envelope, frame))
    if frame_type == FRAME_TEMPERATURE_HUMIDITY:
        return Decoded(points=_temperature_humidity_batch(envelope, frame))
    if frame_type == FRAME_PARAM_ACK:
        return Decoded(events=(_param_ack(envelope, frame),))
    if frame_type == FRAME_STATUS:
        return _status(envelope, frame)
    raise DecodeError(f"unknown Orbit frame type 0x{frame_type:02x}")


def _count(frame: bytes, *, record_size: int, max_count: int, what: str) -> int:
    """The number of records after the 2-byte header, checking length and range."""
    try:
        return count_records(frame, record_size=record_size, max_count=max_count, what=what)
    except InvalidFrame as exc:
        raise DecodeError(str(exc)) from exc


def _sample_times(envelope: UplinkEnvelope, interval_min: int, count: int) -> list[float]:
    """Sample i of n is at ``t - (n-1-i) * interval * 60``; oldest first."""
    if interval_min == 0 and count > 1:
        # Every sample would get the same timestamp and overwrite the others.
        raise DecodeError(f"batch of {count} samples with an interval of 0 minutes")
    t = envelope.received
    return [t - (count - 1 - i) * interval_min * 60 for i in range(count)]


def _temperature_point(envelope: UplinkEnvelope, time: float, raw: bytes) -> DataPoint:
    # Dividing the integer by 100 (not multiplying by 0.01) gives the float nearest the decimal
    # value, so 2310 becomes 23.1, never 23.099999999999998.
    value = int.from_bytes(raw, "big", signed=True) / 100
    return DataPoint(envelope.device, time, "temperature", value, "°C")


def _temperature_batch(envelope: UplinkEnvelope, frame: bytes) -> tuple[DataPoint, ...]:
    count = _count(frame, record_size=2, max_count=5, what="samples")
    times = _sample_times(envelope, frame[1], count)
    return tuple(
        _temperature_point(envelope, times[i], frame[2 + 2 * i : 4 + 2 * i]) for i in range(count)
    )


def _temperature_humidity_batch(envelope: UplinkEnvelope, frame: bytes) -> tuple[DataPoint, ...]:
    count = _count(frame, record_size=3, max_count=3, what="samples")
    times = _sample_times(envelope, frame[1], count)
    points: list[DataPoint] = []
    for i in range(count):
        record = frame[2 + 3 * i : 5 + 3 * i]
        points.append(_temperature_point(envelope, times[i], record[:2]))
        points.append(DataPoint(envelope.device, times[i], "humidity", record[2] / 2, "%RH"))
    return tuple(points)


def _param_ack(envelope: UplinkEnvelope, frame: bytes) -> DeviceEvent:
    return DeviceEvent(
        device=envelope.device,
        time=envelope.received,
        type="param_ack",
        data=_read_param_ack(frame),
    )


def _read_param_ack(frame: bytes) -> dict[str, Any]:
    try:
        return read_param_ack(frame)
    except InvalidFrame as exc:
        raise DecodeError(str(exc)) from exc


def _status(envelope: UplinkEnvelope, frame: bytes) -> Decoded:
    if len(frame) != 6:
        raise DecodeError(f"frame 0x20: wrong length {len(frame)} bytes (expected 6)")
    battery_mv = int.from_bytes(frame[1:3], "big")
    event = DeviceEvent(
        device=envelope.device,
        time=envelope.received,
        type="status",
        data={"battery_mv": battery_mv, "firmware": f"{frame[3]}.{frame[4]}", "flags": frame[5]},
    )
    battery = DataPoint(envelope.device, envelope.received, "battery", battery_mv / 1000, "V")
    return Decoded(points=(battery,), events=(event,))
