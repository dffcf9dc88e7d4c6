"""Relay controller messages on MQTT (``wire-formats.md``, "MQTT").

A relay controller publishes its full state report on ``devices/{id}/state`` (``meta["kind"]``
``state``) and may publish JSON measurements on ``devices/{id}/up`` (``kind`` ``up``).
The report is kept as the device's state; each ADC with a numeric value also becomes a point
``adc_<id>`` (``adc_2.0``) in the ADC's own unit.
"""

from __future__ import annotations

import math
from typing import Any

from services.codecs.base import Decoded, DecodeError
from services.codecs.json_measurements import METRIC_NAME, decode_json_measurements
from services.platform import DataPoint, DeviceEvent, UplinkEnvelope

#: The sections of a state report, each a list of objects (``GET .../state?type=`` serves them).
STATE_SECTIONS = ("Relays", "GPIOs", "ADCs", "Relay_Cs", "GPIO_Cs", "ADC_Cs")


def decode_relay_controller(envelope: UplinkEnvelope) -> Decoded:
    """Decode a relay controller's MQTT message by its kind.

    ``meta["kind"] == "state"`` is a state report (:func:`decode_relay_state`), ``"up"`` is a JSON
    measurement (:func:`decode_json_measurements`); any other kind raises :class:`DecodeError`.
    """
    kind = envelope.meta.get("kind")
    if kind == "state":
        return decode_relay_state(envelope)
    if kind == "up":
        return decode_json_measurements(envelope)
    raise DecodeError(f"relay controller message of unknown kind {kind!r} (expected up or state)")


def decode_relay_state(envelope: UplinkEnvelope) -> Decoded:
    """Validate a state report and return it as ``state`` with one ``state`` event.

    The report must be an object holding at least one known section, and every section present
    must be a list of objects; other keys (``s_time``, ``status``) are kept as they are. The event
    carries ``status``, ``s_time`` and the number of entries per section.
    """
    report = envelope.payload_json
    if not isinstance(report, dict):
        raise DecodeError(f"state report is not a JSON object: {type(report).__name__}")
    present = [name for name in STATE_SECTIONS if name in report]
    if not present:
        raise DecodeError(f"state report has none of the sections {', '.join(STATE_SECTIONS)}")
    for name in present:
        section = report[name]
        if not isinstance(section, list) or not all(isinstance(e, dict) for e in section):
            raise DecodeError(f"state report section {name!r} must be a list of objects")
    event = DeviceEvent(
        device=envelope.device,
        time=envelope.received,
        type="state",
        data={
            "status": report.get("status"),
            "s_time": report.get("s_time"),
            "sections": {name: len(report[name]) for name in present},
        },
    )
    points = tuple(_adc_points(envelope, report.get("ADCs", [])))
    return Decoded(points=points, events=(event,), state=dict(report))


def _adc_points(envelope: UplinkEnvelope, adcs: list[dict[str, Any]]) -> list[DataPoint]:
    """One point per ADC with a sane, unique id and a numeric value; others stay in the state."""
    points: dict[str, DataPoint] = {}
    for adc in adcs:
        adc_id, value, unit = adc.get("id"), _as_number(adc.get("value")), adc.get("unit")
        metric = f"adc_{adc_id}"
        if not isinstance(adc_id, str) or value is None or not METRIC_NAME.fullmatch(metric):
            continue
        if metric not in points:
            unit = unit if isinstance(unit, str) else None
            points[metric] = DataPoint(envelope.device, envelope.received, metric, value, unit)
    return list(points.values())


def _as_number(raw: Any) -> float | None:
    """The controller quotes numbers (``"12.31"``); None when it is not a finite number."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None
