"""The Orbit parameter and model tables, unit conversion and the 2-byte value encoding."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.orbit.params import (
    FACTORY_DEFAULTS,
    MODELS,
    PARAMS,
    PARAMS_BY_ID,
    InvalidParam,
    decode_value,
    default_active,
    encode_value,
    from_raw,
    params_of,
    to_raw,
)

# --- the spec's tables ------------------------------------------------------------------------


def test_parameter_table_matches_the_spec() -> None:
    rows = [(p.id, p.name, p.signed, p.scale, p.priority, p.group) for p in PARAMS.values()]

    assert rows == [
        (0x01, "sample_interval", False, 1, 2, None),
        (0x02, "batch_size", False, 1, 2, None),
        (0x03, "temp_high", True, 0.01, 1, "temp_alarm"),
        (0x04, "temp_low", True, 0.01, 1, "temp_alarm"),
        (0x05, "humidity_high", False, 0.5, 1, None),
        (0x06, "led", False, 1, 3, None),
        (0x07, "downlink_every", False, 1, 3, None),
    ]
    assert {pid: p.name for pid, p in PARAMS_BY_ID.items()} == {p.id: n for n, p in PARAMS.items()}


@pytest.mark.parametrize(
    ("name", "model", "valid_range"),
    [
        ("sample_interval", "orbit-t", (1, 1440)),
        ("batch_size", "orbit-t", (1, 5)),
        ("batch_size", "orbit-lite", (1, 5)),
        ("batch_size", "orbit-th", (1, 3)),
        ("temp_high", "orbit-th", (-4000, 12500)),
        ("temp_low", "orbit-lite", (-4000, 12500)),
        ("humidity_high", "orbit-th", (0, 200)),
        ("led", "orbit-t", (0, 1)),
        ("downlink_every", "orbit-t", (6, 24)),
    ],
)
def test_valid_raw_ranges(name: str, model: str, valid_range: tuple[int, int]) -> None:
    assert PARAMS[name].raw_range(model) == valid_range


def test_models_their_metrics_params_and_downlink_limits() -> None:
    summary = {
        m.name: (m.metrics, "humidity_high" in m.params, m.params_per_downlink)
        for m in MODELS.values()
    }

    assert summary == {
        "orbit-t": (("temperature",), False, 2),
        "orbit-th": (("temperature", "humidity"), True, 2),
        "orbit-lite": (("temperature",), False, 1),
    }
    assert [p.name for p in params_of("orbit-th")] == list(PARAMS)


def test_factory_defaults_in_natural_and_raw_units() -> None:
    assert FACTORY_DEFAULTS == {
        "sample_interval": 15, "batch_size": 4, "temp_high": 40.0, "temp_low": -10.0,
        "humidity_high": 90, "led": 0, "downlink_every": 24,
    }  # fmt: skip
    assert default_active("orbit-th") == {
        "sample_interval": 15, "batch_size": 4, "temp_high": 4000, "temp_low": -1000,
        "humidity_high": 180, "led": 0, "downlink_every": 24,
    }  # fmt: skip
    assert "humidity_high" not in default_active("orbit-t")
    assert default_active("orbit-lite") == default_active("orbit-t")


# --- natural <-> raw ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "name", "value", "raw"),
    [
        ("orbit-t", "temp_high", 30.5, 3050),
        ("orbit-t", "temp_high", 23.1, 2310),
        ("orbit-t", "temp_low", -10, -1000),
        ("orbit-t", "temp_low", -40, -4000),
        ("orbit-t", "temp_high", 125, 12500),
        ("orbit-t", "temp_high", 0.01, 1),
        ("orbit-th", "humidity_high", 80, 160),
        ("orbit-th", "humidity_high", 80.5, 161),
        ("orbit-th", "humidity_high", 0, 0),
        ("orbit-th", "humidity_high", 100, 200),
        ("orbit-t", "sample_interval", 30, 30),
        ("orbit-t", "sample_interval", 30.0, 30),
        ("orbit-t", "sample_interval", 1440, 1440),
        ("orbit-t", "batch_size", 5, 5),
        ("orbit-th", "batch_size", 3, 3),
        ("orbit-lite", "led", 1, 1),
        ("orbit-t", "downlink_every", 6, 6),
    ],
)
def test_to_raw(model: str, name: str, value: float, raw: int) -> None:
    assert to_raw(model, name, value) == raw


@pytest.mark.parametrize(
    ("model", "name", "value", "reason"),
    [
        ("orbit-t", "colour", 1, "unknown parameter 'colour'"),
        ("orbit-t", "humidity_high", 80, "orbit-t has no parameter 'humidity_high'"),
        ("orbit-lite", "humidity_high", 80, "orbit-lite has no parameter 'humidity_high'"),
        ("orbit-x", "led", 1, "unknown Orbit model 'orbit-x'"),
        ("orbit-th", "batch_size", 4, "batch_size must be between 1 and 3 samples on orbit-th"),
        ("orbit-t", "batch_size", 6, "batch_size must be between 1 and 5 samples on orbit-t"),
        ("orbit-t", "batch_size", 0, "between 1 and 5"),
        ("orbit-t", "sample_interval", 1441, "between 1 and 1440 min"),
        ("orbit-t", "temp_high", 125.01, "temp_high must be between -40 and 125 °C"),
        ("orbit-t", "temp_low", -40.01, "between -40 and 125 °C"),
        ("orbit-th", "humidity_high", 100.5, "between 0 and 100 %RH"),
        ("orbit-t", "downlink_every", 5, "between 6 and 24 h"),
        ("orbit-t", "led", 2, "between 0 and 1"),
        ("orbit-t", "temp_high", 30.505, "multiple of 0.01 °C"),
        ("orbit-th", "humidity_high", 80.25, "multiple of 0.5 %RH"),
        ("orbit-t", "sample_interval", 1.5, "multiple of 1 min"),
        ("orbit-t", "led", True, "must be a number"),
        ("orbit-t", "led", "1", "must be a number"),
        ("orbit-t", "led", None, "must be a number"),
        ("orbit-t", "temp_high", math.nan, "finite"),
        ("orbit-t", "temp_high", math.inf, "finite"),
    ],
)
def test_to_raw_refuses_with_a_reason(model: str, name: str, value: object, reason: str) -> None:
    with pytest.raises(InvalidParam, match=reason) as caught:
        to_raw(model, name, value)  # type: ignore[arg-type]

    assert isinstance(caught.value, ValueError)
    assert caught.value.reason == str(caught.value)
    assert caught.value.details == (caught.value.reason,)


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("temp_high", 3050, 30.5),
        ("temp_high", 2310, 23.1),
        ("temp_low", -1000, -10.0),
        ("temp_low", -1, -0.01),
        ("humidity_high", 160, 80.0),
        ("humidity_high", 161, 80.5),
        ("sample_interval", 30, 30.0),
        ("led", 1, 1.0),
    ],
)
def test_from_raw_gives_natural_units(name: str, raw: int, value: float) -> None:
    assert from_raw(name, raw) == value


def test_from_raw_of_an_unknown_name() -> None:
    with pytest.raises(InvalidParam, match="unknown parameter"):
        from_raw("colour", 1)


def _in_range(model: str, name: str) -> st.SearchStrategy[int]:
    low, high = PARAMS[name].raw_range(model)
    return st.integers(min_value=low, max_value=high)


model_and_param = st.sampled_from([(m.name, name) for m in MODELS.values() for name in m.params])


@settings(database=None)
@given(data=st.data(), pair=model_and_param)
def test_natural_value_round_trips_to_the_same_raw(
    data: st.DataObject, pair: tuple[str, str]
) -> None:
    model, name = pair
    raw = data.draw(_in_range(model, name))

    assert to_raw(model, name, from_raw(name, raw)) == raw


# --- 2-byte values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "hex_value"),
    [
        ("sample_interval", 30, "001e"),
        ("led", 1, "0001"),
        ("temp_high", 3050, "0bea"),
        ("temp_low", -1000, "fc18"),
        ("temp_low", -4000, "f060"),
        ("temp_low", -1, "ffff"),
        ("humidity_high", 200, "00c8"),
        ("sample_interval", 0xFFFF, "ffff"),
    ],
)
def test_values_are_two_bytes_big_endian(name: str, raw: int, hex_value: str) -> None:
    assert encode_value(name, raw).hex() == hex_value
    assert encode_value(PARAMS[name], raw).hex() == hex_value
    assert decode_value(name, bytes.fromhex(hex_value)) == raw


@settings(database=None)
@given(name=st.sampled_from(list(PARAMS)), data=st.binary(min_size=2, max_size=2))
def test_any_two_bytes_decode_and_encode_back(name: str, data: bytes) -> None:
    assert encode_value(name, decode_value(name, data)) == data


@pytest.mark.parametrize(("name", "raw"), [("temp_high", 32768), ("led", -1), ("led", 65536)])
def test_values_that_do_not_fit_16_bits(name: str, raw: int) -> None:
    with pytest.raises(InvalidParam, match="does not fit"):
        encode_value(name, raw)


def test_decode_needs_exactly_two_bytes() -> None:
    with pytest.raises(ValueError, match="2 bytes"):
        decode_value("led", b"\x00")
