"""The Orbit models and parameters (``shared/specs/orbit-protocol.md``, "Models", "Parameters").

Values exist in two units: *natural* (what the API speaks: ``temp_high=30.5`` °C,
``humidity_high=80`` %RH) and *raw* (the integer that travels in 2 big-endian bytes:
``3050``, ``160``). :func:`to_raw` validates and converts one way, :func:`from_raw` the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = [
    "FACTORY_DEFAULTS",
    "MODELS",
    "PARAMS",
    "PARAMS_BY_ID",
    "InvalidParam",
    "Model",
    "Param",
    "decode_value",
    "default_active",
    "encode_value",
    "from_raw",
    "get_model",
    "get_param",
    "params_of",
    "to_raw",
]


class InvalidParam(ValueError):
    """A parameter update that cannot be queued; ``reason`` says why in a human sentence.

    ``param`` names the parameter when there is one; ``details`` lists every reason when several
    parameters of one request were refused (the 422 body's ``details``).
    """

    def __init__(
        self, reason: str, *, param: str | None = None, details: tuple[str, ...] = ()
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param
        self.details = details or (reason,)


@dataclass(frozen=True, slots=True)
class Param:
    """One row of the parameter table. Ranges are raw; ``scale`` turns raw into natural units."""

    id: int
    name: str
    signed: bool
    scale: float
    unit: str
    min_raw: int
    max_raw: int
    priority: int
    group: str | None = None
    #: (model, min_raw, max_raw) where a model narrows the range.
    model_ranges: tuple[tuple[str, int, int], ...] = ()

    def raw_range(self, model: str) -> tuple[int, int]:
        """The valid raw range on ``model`` (inclusive)."""
        for name, low, high in self.model_ranges:
            if name == model:
                return low, high
        return self.min_raw, self.max_raw


@dataclass(frozen=True, slots=True)
class Model:
    """An Orbit model: what it measures, which parameters it has, how many fit in a downlink."""

    name: str
    metrics: tuple[str, ...]
    params: tuple[str, ...]
    params_per_downlink: int


_PARAM_TABLE = (
    Param(0x01, "sample_interval", False, 1, "min", 1, 1440, priority=2),
    Param(0x02, "batch_size", False, 1, "samples", 1, 5, 2, model_ranges=(("orbit-th", 1, 3),)),
    Param(0x03, "temp_high", True, 0.01, "°C", -4000, 12500, priority=1, group="temp_alarm"),
    Param(0x04, "temp_low", True, 0.01, "°C", -4000, 12500, priority=1, group="temp_alarm"),
    Param(0x05, "humidity_high", False, 0.5, "%RH", 0, 200, priority=1),
    Param(0x06, "led", False, 1, "", 0, 1, priority=3),
    Param(0x07, "downlink_every", False, 1, "h", 6, 24, priority=3),
)

PARAMS: dict[str, Param] = {p.name: p for p in _PARAM_TABLE}
PARAMS_BY_ID: dict[int, Param] = {p.id: p for p in _PARAM_TABLE}

_ALL = tuple(p.name for p in _PARAM_TABLE)
_NO_HUMIDITY = tuple(name for name in _ALL if name != "humidity_high")

MODELS: dict[str, Model] = {
    "orbit-t": Model("orbit-t", ("temperature",), _NO_HUMIDITY, params_per_downlink=2),
    "orbit-th": Model("orbit-th", ("temperature", "humidity"), _ALL, params_per_downlink=2),
    "orbit-lite": Model("orbit-lite", ("temperature",), _NO_HUMIDITY, params_per_downlink=1),
}

#: The active values of a new device until it acks otherwise, in natural units. A model only
#: has the parameters it lists (no ``humidity_high`` on ``orbit-t``): see :func:`default_active`.
FACTORY_DEFAULTS: dict[str, float] = {
    "sample_interval": 15,
    "batch_size": 4,
    "temp_high": 40.0,
    "temp_low": -10.0,
    "humidity_high": 90,
    "led": 0,
    "downlink_every": 24,
}


def get_model(model: str) -> Model:
    """The model named ``model``; :class:`InvalidParam` when it is not an Orbit model."""
    try:
        return MODELS[model]
    except KeyError:
        raise InvalidParam(f"unknown Orbit model {model!r}") from None


def get_param(name: str) -> Param:
    """The parameter named ``name``; :class:`InvalidParam` when there is none."""
    try:
        return PARAMS[name]
    except KeyError:
        known = ", ".join(PARAMS)
        raise InvalidParam(f"unknown parameter {name!r} (known: {known})", param=name) from None


def params_of(model: str) -> tuple[Param, ...]:
    """The parameters ``model`` has, by id."""
    return tuple(PARAMS[name] for name in get_model(model).params)


def _unit(param: Param) -> str:
    return f" {param.unit}" if param.unit else ""


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def to_raw(model: str, name: str, value: float) -> int:
    """Validate a natural value of parameter ``name`` on ``model`` and give its raw integer.

    Raises :class:`InvalidParam` for an unknown model or name, a parameter the model lacks, a
    value that is not a finite number, not a whole number of the parameter's steps (0.01 °C,
    0.5 %RH, 1 minute...) or outside the model's valid range.
    """
    param = get_param(name)
    spec = get_model(model)
    if name not in spec.params:
        raise InvalidParam(f"{model} has no parameter {name!r}", param=name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParam(f"{name} must be a number, got {value!r}", param=name)
    if not math.isfinite(value):
        raise InvalidParam(f"{name} must be a finite number, got {value!r}", param=name)
    try:
        steps = Decimal(str(value)) / Decimal(str(param.scale))
    except InvalidOperation:  # pragma: no cover - finite floats always convert
        raise InvalidParam(f"{name}: {value!r} is not a number", param=name) from None
    if steps != steps.to_integral_value():
        step = _format_number(param.scale)
        raise InvalidParam(
            f"{name} must be a multiple of {step}{_unit(param)}, got {value!r}",
            param=name,
        )
    raw = int(steps)
    low, high = param.raw_range(model)
    if not low <= raw <= high:
        low_text = _format_number(from_raw(name, low))
        high_text = _format_number(from_raw(name, high))
        raise InvalidParam(
            f"{name} must be between {low_text} and {high_text}{_unit(param)} on {model}, "
            f"got {value!r}",
            param=name,
        )
    return raw


def from_raw(name: str, raw: int) -> float:
    """The natural value of a raw integer of parameter ``name`` (3050 -> 30.5 for ``temp_high``).

    No range check: an acked value is whatever the sensor applied.
    """
    param = get_param(name)
    # Exact decimal product, then the nearest float: 3050 gives 30.5, 2310 gives 23.1.
    return float(Decimal(raw) * Decimal(str(param.scale)))


def default_active(model: str) -> dict[str, int]:
    """The factory-default active values of a new ``model`` device, raw, for its parameters.

    Not range-checked against the model: ``batch_size=4`` is the factory value even on
    ``orbit-th`` (whose requests are limited to 1..3); the device's acks correct it if needed.
    """
    return {
        p.name: int(Decimal(str(FACTORY_DEFAULTS[p.name])) / Decimal(str(p.scale)))
        for p in params_of(model)
    }


def _as_param(param: Param | str) -> Param:
    return param if isinstance(param, Param) else get_param(param)


def encode_value(param: Param | str, raw: int) -> bytes:
    """The 2 big-endian bytes of a raw value (two's complement for ``i16`` parameters)."""
    spec = _as_param(param)
    try:
        return raw.to_bytes(2, "big", signed=spec.signed)
    except OverflowError:
        kind = "i16" if spec.signed else "u16"
        raise InvalidParam(f"{spec.name}: raw value {raw} does not fit {kind}") from None


def decode_value(param: Param | str, data: bytes) -> int:
    """The raw value held in 2 big-endian bytes (two's complement for ``i16`` parameters)."""
    spec = _as_param(param)
    if len(data) != 2:
        raise ValueError(f"{spec.name}: a value is 2 bytes, got {len(data)}")
    return int.from_bytes(data, "big", signed=spec.signed)
