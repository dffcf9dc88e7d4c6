"""Cayenne Low Power Payload (``shared/specs/wire-formats.md``, "LoRaWAN payloads").

A frame is a sequence of ``channel:u8 type:u8 value``; integers are big-endian. Each value
becomes a point named ``<type>_<channel>`` (``temperature_3``). Types with several fields name
each field between type and channel, so the channel is always the last part:
``accelerometer_x_1``, ``gyrometer_z_2``, ``gps_latitude_4``, ``gps_altitude_4``.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.codecs.base import Decoded, DecodeError, payload_bytes
from services.platform import DataPoint, UplinkEnvelope


@dataclass(frozen=True, slots=True)
class LppField:
    """One integer field of an LPP value: metric suffix, width, signedness, divisor and unit."""

    suffix: str  # "" for single-field types
    size: int
    signed: bool
    divisor: int  # value = raw / divisor
    unit: str | None


@dataclass(frozen=True, slots=True)
class LppType:
    """An LPP data type: the metric's stem and the fields of one value."""

    name: str
    fields: tuple[LppField, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.fields)


def _single(name: str, unit: str | None, size: int, *, signed: bool, divisor: int) -> LppType:
    return LppType(name, (LppField("", size, signed, divisor, unit),))


def _axes(name: str, unit: str, divisor: int) -> LppType:
    return LppType(name, tuple(LppField(axis, 2, True, divisor, unit) for axis in "xyz"))


LPP_TYPES: dict[int, LppType] = {
    0x00: _single("digital_in", None, 1, signed=False, divisor=1),
    0x01: _single("digital_out", None, 1, signed=False, divisor=1),
    0x02: _single("analog_in", None, 2, signed=True, divisor=100),
    0x03: _single("analog_out", None, 2, signed=True, divisor=100),
    0x65: _single("illuminance", "lux", 2, signed=False, divisor=1),
    0x66: _single("presence", None, 1, signed=False, divisor=1),
    0x67: _single("temperature", "°C", 2, signed=True, divisor=10),
    0x68: _single("humidity", "%RH", 1, signed=False, divisor=2),
    0x71: _axes("accelerometer", "G", 1000),
    0x73: _single("barometer", "hPa", 2, signed=False, divisor=10),
    0x86: _axes("gyrometer", "°/s", 100),
    0x88: LppType(
        "gps",
        (
            LppField("latitude", 3, True, 10_000, "°"),
            LppField("longitude", 3, True, 10_000, "°"),
            LppField("altitude", 3, True, 100, "m"),
        ),
    ),
}


def decode_lpp(envelope: UplinkEnvelope) -> Decoded:
    """Decode a Cayenne LPP frame from ``envelope.payload_hex`` into points at ``received``.

    Raises :class:`DecodeError` for an empty or truncated frame, an unknown type, or the same
    channel and type twice in one frame (the two points would collide).
    """
    frame = payload_bytes(envelope)
    points: list[DataPoint] = []
    seen: set[str] = set()
    offset = 0
    while offset < len(frame):
        if offset + 2 > len(frame):
            raise DecodeError(f"truncated at byte {offset}: a channel without a type")
        channel, type_id = frame[offset], frame[offset + 1]
        lpp_type = LPP_TYPES.get(type_id)
        if lpp_type is None:
            raise DecodeError(f"unknown LPP type 0x{type_id:02x} at byte {offset + 1}")
        offset += 2
        if offset + lpp_type.size > len(frame):
            raise DecodeError(
                f"truncated: channel {channel} {lpp_type.name} needs {lpp_type.size} bytes, "
                f"{len(frame) - offset} left"
            )
        for field in lpp_type.fields:
            raw = int.from_bytes(frame[offset : offset + field.size], "big", signed=field.signed)
            offset += field.size
            stem = f"{lpp_type.name}_{field.suffix}" if field.suffix else lpp_type.name
            metric = f"{stem}_{channel}"
            if metric in seen:
                raise DecodeError(f"{metric} appears twice in one frame")
            seen.add(metric)
            # raw / divisor (not raw * 0.1) is the float nearest the decimal: 272 -> 27.2.
            value = raw / field.divisor
            points.append(DataPoint(envelope.device, envelope.received, metric, value, field.unit))
    return Decoded(points=tuple(points))
