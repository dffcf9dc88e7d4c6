"""JSON measurements published on MQTT ``devices/{id}/up`` (``wire-formats.md``, "MQTT").

``{"time": 1700000000, "values": {"temperature": 21.5, "co2": 412}}``: one point per entry of
``values``, the metric named as the key, no unit; ``time`` (Unix seconds) is optional and
defaults to the receive time.
"""

from __future__ import annotations

import math
import re
from typing import Any

from services.codecs.base import Decoded, DecodeError
from services.platform import DataPoint, UplinkEnvelope

#: A metric name: 1..64 characters of letters, digits, ``_``, ``-`` and ``.``.
METRIC_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: Later than this is not a time in seconds (year 5138): most likely milliseconds.
_MAX_EPOCH_SECONDS = 1e11


def decode_json_measurements(envelope: UplinkEnvelope) -> Decoded:
    """Decode ``envelope.payload_json`` into one point per value.

    Raises :class:`DecodeError`, naming the field, when the payload is not an object, ``values``
    is missing, empty or not an object, a metric name is not sane, a value is not a finite
    number (booleans, strings and nested values are refused), or ``time`` is not Unix seconds.
    """
    payload = envelope.payload_json
    if not isinstance(payload, dict):
        raise DecodeError(f"payload is not a JSON object: {type(payload).__name__}")
    values = payload.get("values")
    if not isinstance(values, dict):
        raise DecodeError("'values' must be an object of metric -> number")
    if not values:
        raise DecodeError("'values' is empty")
    time = _time(payload.get("time"), default=envelope.received)
    points = tuple(
        DataPoint(envelope.device, time, _metric(name), _number(name, value))
        for name, value in values.items()
    )
    return Decoded(points=points)


def _time(raw: Any, *, default: float) -> float:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise DecodeError(f"'time' must be Unix seconds, got {type(raw).__name__}")
    try:
        time = float(raw)
    except (ValueError, OverflowError):
        raise DecodeError(f"'time' is not a number: {raw!r}") from None
    if not math.isfinite(time) or time < 0:
        raise DecodeError(f"'time' out of range: {raw!r}")
    if time > _MAX_EPOCH_SECONDS:
        raise DecodeError(f"'time' must be Unix seconds, {raw!r} looks like milliseconds")
    return time


def _metric(name: Any) -> str:
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        raise DecodeError(
            f"metric name {str(name)[:80]!r} must be 1..64 letters, digits, '_', '-' or '.'"
        )
    return name


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"values.{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise DecodeError(f"values.{name} is too large") from None
    if not math.isfinite(number):
        raise DecodeError(f"values.{name} is not finite: {value!r}")
    return number
