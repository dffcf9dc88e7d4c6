"""From a JavaScript codec's decoded object to data points (``device-codecs.md``, "From decoded
data to data points").

Every numeric leaf is a point named by its path of keys joined by ``.`` (array indexes
included: ``sensors.0.value``); booleans are 1 and 0; strings and nulls are not points. A point's
unit is the model's ``units`` entry for the metric, else the unit of TTN's normalized payload
schema for a normalized payload, else none. A normalized array of measurements gives each its own
points, at its ``time`` when it has one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.platform import DataPoint

#: Units of TTN's normalized payload schema (lorawan-devices ``lib/payload.json``).
NORMALIZED_UNITS: dict[str, str] = {
    "air.temperature": "°C",
    "air.relativeHumidity": "%",
    "air.pressure": "hPa",
    "air.co2": "ppm",
    "air.lightIntensity": "lx",
    "soil.depth": "cm",
    "soil.moisture": "%",
    "soil.temperature": "°C",
    "soil.ec": "dS/m",
    "soil.n": "ppm",
    "soil.p": "ppm",
    "soil.k": "ppm",
    "water.temperature": "°C",
    "wind.speed": "m/s",
    "wind.direction": "°",
    "battery": "V",
    "position.latitude": "°",
    "position.longitude": "°",
    "position.altitude": "m",
    "metering.water.total": "L",
    "metering.electricity.voltage": "V",
    "metering.electricity.current": "A",
    "metering.electricity.power": "W",
    "metering.electricity.energy": "kWh",
}
#: The longest metric name stored (longer paths are skipped).
MAX_METRIC_LENGTH = 200
#: The most points one uplink may give (beyond: the rest are not stored, the object is kept).
MAX_POINTS = 1000


def _leaves(value: Any, path: str, out: list[tuple[str, float]]) -> None:
    """Append ``(metric, value)`` for every numeric or boolean leaf under ``path``."""
    for key, item in value.items() if isinstance(value, Mapping) else enumerate(value):
        name = f"{path}.{key}" if path else str(key)
        kind = type(item)
        if kind is float or kind is int:
            if kind is int or math.isfinite(item):
                out.append((name, float(item)))
        elif kind is bool:
            out.append((name, 1.0 if item else 0.0))
        elif isinstance(item, Mapping | list):
            _leaves(item, name, out)


def _time(value: Any, default: float) -> float:
    """A measurement's ISO 8601 ``time`` as Unix seconds; ``default`` when absent or invalid."""
    if not isinstance(value, str):
        return default
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return default
    if parsed.tzinfo is None:
        return default
    return parsed.timestamp()


def flatten_points(
    device: str,
    received: float,
    data: Mapping[str, Any],
    normalized: Mapping[str, Any] | list[Any] | None,
    units: Mapping[str, str],
) -> tuple[DataPoint, ...]:
    """The points of one decoded uplink: of ``normalized`` when there is one, else of ``data``;
    one per metric and time (the last wins)."""
    points: dict[tuple[str, float], DataPoint] = {}
    if normalized is None:
        measurements: list[tuple[Any, float]] = [(data, received)]
        schema: Mapping[str, str] = {}
    else:
        items = normalized if isinstance(normalized, list) else [normalized]
        measurements = [
            ({k: v for k, v in item.items() if k != "time"}, _time(item.get("time"), received))
            for item in items
            if isinstance(item, Mapping)
        ]
        schema = NORMALIZED_UNITS
    for measurement, time in measurements:
        leaves: list[tuple[str, float]] = []
        _leaves(measurement, "", leaves)
        for metric, value in leaves:
            if not metric or len(metric) > MAX_METRIC_LENGTH:
                continue
            unit = units.get(metric) or schema.get(metric)
            points[(metric, time)] = DataPoint(device, time, metric, value, unit)
            if len(points) >= MAX_POINTS:
                return tuple(points.values())
    return tuple(points.values())
