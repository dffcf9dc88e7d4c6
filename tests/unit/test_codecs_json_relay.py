"""JSON measurements, relay controller reports and commands, and the codec registry."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.codecs import CODECS, Decoded, DecodeError, decode_uplink
from services.codecs.json_measurements import decode_json_measurements
from services.codecs.lpp import decode_lpp
from services.codecs.orbit_uplink import decode_orbit
from services.codecs.relay import decode_relay_controller, decode_relay_state
from services.commands.validation import CommandInvalid, validate_command
from services.platform.events import DataPoint, UplinkEnvelope
from tests.samples import sample

T = 1700000123.5


def outcome(
    codec: Callable[[UplinkEnvelope], Decoded], env: UplinkEnvelope
) -> Decoded | DecodeError:
    """The codec's result, or the DecodeError it raised; any other exception propagates."""
    try:
        return codec(env)
    except DecodeError as exc:
        return exc


def mqtt(payload: Any, kind: str | None = "up", device: str = "DEV-1") -> UplinkEnvelope:
    meta = {} if kind is None else {"kind": kind}
    return UplinkEnvelope(source="mqtt", device=device, received=T, payload_json=payload, meta=meta)


def relay_state_sample() -> dict[str, Any]:
    report: dict[str, Any] = sample("relay-state.json")
    return report


# --- JSON measurements ------------------------------------------------------------------------


def test_spec_measurement_with_time() -> None:
    decoded = decode_json_measurements(mqtt({"time": 1700000000, "values": {"temperature": 21.5}}))

    assert decoded == Decoded(points=(DataPoint("DEV-1", 1700000000, "temperature", 21.5),))


def test_measurement_without_time_is_at_receive_time() -> None:
    decoded = decode_json_measurements(mqtt({"values": {"co2": 412, "pm2.5": 3.25}}))

    assert [(p.metric, p.value, p.time) for p in decoded.points] == [
        ("co2", 412.0, T),
        ("pm2.5", 3.25, T),
    ]
    assert all(isinstance(p.value, float) for p in decoded.points)


def test_quoted_time_is_accepted() -> None:
    decoded = decode_json_measurements(mqtt({"time": "1700000000.25", "values": {"t": 1}}))

    assert decoded.points[0].time == 1700000000.25


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1, 2], "not a JSON object"),
        (None, "not a JSON object"),
        ({}, "'values' must be an object"),
        ({"values": [21.5]}, "'values' must be an object"),
        ({"values": {}}, "'values' is empty"),
        ({"values": {"temperature": True}}, r"values\.temperature must be a number, got bool"),
        ({"values": {"temperature": "21.5"}}, r"values\.temperature must be a number, got str"),
        ({"values": {"temperature": {"v": 1}}}, r"values\.temperature must be a number, got dict"),
        ({"values": {"temperature": None}}, r"values\.temperature must be a number"),
        ({"values": {"temperature": float("nan")}}, r"values\.temperature is not finite"),
        ({"values": {"big": 10**400}}, r"values\.big is too large"),
        ({"values": {"": 1}}, "metric name '' must be"),
        ({"values": {"x" * 65: 1}}, "must be 1..64"),
        ({"values": {"temp erature": 1}}, "metric name 'temp erature'"),
        ({"time": True, "values": {"t": 1}}, "'time' must be Unix seconds"),
        ({"time": [1], "values": {"t": 1}}, "'time' must be Unix seconds"),
        ({"time": "soon", "values": {"t": 1}}, "'time' is not a number"),
        ({"time": -5, "values": {"t": 1}}, "'time' out of range"),
        ({"time": 1700000000000, "values": {"t": 1}}, "looks like milliseconds"),
    ],
)
def test_bad_measurements_are_decode_errors(payload: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_json_measurements(mqtt(payload))


def test_metric_name_of_64_characters_is_accepted() -> None:
    decoded = decode_json_measurements(mqtt({"values": {"m" * 64: 1}}))

    assert decoded.points[0].metric == "m" * 64


metric_names = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)


@settings(database=None)
@given(
    values=st.dictionaries(
        metric_names, st.floats(allow_nan=False, allow_infinity=False), min_size=1
    ),
    time=st.none() | st.integers(min_value=0, max_value=4_000_000_000),
)
def test_measurement_round_trip(values: dict[str, float], time: int | None) -> None:
    payload = {"values": values} if time is None else {"time": time, "values": values}

    decoded = decode_json_measurements(mqtt(json.loads(json.dumps(payload))))

    assert {p.metric: p.value for p in decoded.points} == values
    assert {p.time for p in decoded.points} == {T if time is None else time}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@settings(database=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({"values": json_values}),
        st.fixed_dictionaries(
            {"time": json_values, "values": st.dictionaries(st.text(), json_values)}
        ),
    )
)
def test_random_json_decodes_or_raises_decode_error(payload: Any) -> None:
    result = outcome(decode_json_measurements, mqtt(payload))
    if isinstance(result, DecodeError):
        assert result.reason
    else:
        assert result.points
        assert all(isinstance(p.value, float) for p in result.points)


# --- relay controller state ---------------------------------------------------------------------


def test_state_sample_is_kept_whole_with_a_summary_event() -> None:
    report = relay_state_sample()

    decoded = decode_relay_state(mqtt(report, kind="state"))

    assert decoded.state == report
    (event,) = decoded.events
    assert (event.device, event.time, event.type) == ("DEV-1", T, "state")
    assert event.data == {
        "status": "online",
        "s_time": "2023-01-25T08:30:45",
        "sections": {
            "Relays": 2,
            "GPIOs": 1,
            "ADCs": 1,
            "Relay_Cs": 1,
            "GPIO_Cs": 1,
            "ADC_Cs": 1,
        },
    }
    assert decoded.points == (DataPoint("DEV-1", T, "adc_2.0", 12.31, "V"),)


def test_state_is_a_copy_not_the_received_object() -> None:
    report = relay_state_sample()

    decoded = decode_relay_state(mqtt(report, kind="state"))

    assert decoded.state is not report


def test_partial_report_is_accepted_and_non_numeric_adcs_give_no_point() -> None:
    report = {"ADCs": [{"id": "2.0", "value": "n/a"}, {"id": "2.1", "value": 5}, {"value": 1}]}

    decoded = decode_relay_state(mqtt(report, kind="state"))

    assert decoded.state == report
    assert decoded.points == (DataPoint("DEV-1", T, "adc_2.1", 5.0, None),)
    assert decoded.events[0].data["sections"] == {"ADCs": 3}


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ("online", "not a JSON object"),
        ({"status": "online"}, "none of the sections"),
        ({"Relays": {"id": "255.0"}}, "'Relays' must be a list of objects"),
        ({"Relays": [], "GPIOs": ["1.0"]}, "'GPIOs' must be a list of objects"),
    ],
)
def test_bad_state_reports_are_decode_errors(report: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_relay_state(mqtt(report, kind="state"))


def test_relay_controller_dispatches_on_the_mqtt_kind() -> None:
    state = decode_relay_controller(mqtt(relay_state_sample(), kind="state"))
    up = decode_relay_controller(mqtt({"values": {"temperature": 20}}, kind="up"))

    assert state.state is not None
    assert state.events[0].type == "state"
    assert up.state is None
    assert up.points == (DataPoint("DEV-1", T, "temperature", 20.0),)


@pytest.mark.parametrize("kind", [None, "command", "UP"])
def test_relay_controller_refuses_an_unknown_kind(kind: str | None) -> None:
    with pytest.raises(DecodeError, match="unknown kind"):
        decode_relay_controller(mqtt(relay_state_sample(), kind=kind))


# --- commands -----------------------------------------------------------------------------------


def test_command_sample_is_published_as_is() -> None:
    payload = sample("relay-command.json")["payload"]

    assert validate_command(payload) == payload


@pytest.mark.parametrize(
    ("entry", "published"),
    [
        ({"id": "255.1", "state": "1"}, {"id": "255.1", "state": 1}),
        ({"relay": "SecurityAlarm", "state": 0}, {"relay": "SecurityAlarm", "state": 0}),
        ({"id": "255.1", "relay": 7, "state": True}, {"id": "255.1", "relay": 7, "state": 1}),
        ({"id": None, "relay": "Pump", "state": "0"}, {"id": None, "relay": "Pump", "state": 0}),
    ],
)
def test_relay_entries_are_normalised(entry: dict[str, Any], published: dict[str, Any]) -> None:
    payload = {"Output": "Relay", "Relays": [entry]}
    before = copy.deepcopy(payload)

    assert validate_command(payload) == {"Output": "Relay", "Relays": [published]}
    assert payload == before


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "payload must be a JSON object"),
        ({}, "'Output' is required"),
        ({"Output": ""}, "'Output' is required"),
        ({"Output": 1}, "'Output' is required"),
        ({"Output": "Relay"}, "'Relays' must be a non-empty list"),
        ({"Output": "relay", "Relays": []}, "'Relays' must be a non-empty list"),
        ({"Output": "Relay", "Relays": ["255.1"]}, r"Relays\[0\] must be an object"),
        ({"Output": "Relay", "Relays": [{"state": 1}]}, r"Relays\[0\] needs 'id' or 'relay'"),
        (
            {"Output": "Relay", "Relays": [{"id": "", "relay": "Pump", "state": 1}]},
            r"Relays\[0\] needs 'id' or 'relay'",
        ),
        (
            {"Output": "Relay", "Relays": [{"id": "1", "state": 1}, {"id": "2", "state": 2}]},
            r"Relays\[1\]\.state must be 0 or 1",
        ),
        ({"Output": "Relay", "Relays": [{"id": "1", "state": 1.0}]}, "state must be 0 or 1"),
        ({"Output": "Relay", "Relays": [{"id": "1", "state": "on"}]}, "state must be 0 or 1"),
        ({"Output": "Relay", "Relays": [{"id": "1"}]}, "state must be 0 or 1"),
    ],
)
def test_invalid_commands_are_refused(payload: Any, reason: str) -> None:
    with pytest.raises(CommandInvalid, match=reason) as caught:
        validate_command(payload)
    assert isinstance(caught.value, ValueError)
    assert caught.value.reason


def test_other_outputs_are_published_unchanged() -> None:
    payload = {"Output": "GPIO", "GPIOs": [{"id": "1.0", "state": "anything"}]}

    assert validate_command(payload) == payload


# --- the registry -------------------------------------------------------------------------------


def test_registry_maps_every_model_to_its_codec() -> None:
    assert CODECS == {
        "orbit-t": decode_orbit,
        "orbit-th": decode_orbit,
        "orbit-lite": decode_orbit,
        "lorawan-lpp": decode_lpp,
        "json": decode_json_measurements,
        "relay-controller": decode_relay_controller,
    }


def test_decode_uplink_uses_the_models_codec() -> None:
    decoded = decode_uplink("json", mqtt({"values": {"temperature": 21.5}}))

    assert decoded.points == (DataPoint("DEV-1", T, "temperature", 21.5),)


def test_unknown_model_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no codec for device model 'orbit-x'"):
        decode_uplink("orbit-x", mqtt({"values": {"t": 1}}))


def test_a_codec_crash_becomes_a_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def crashing_codec(envelope: UplinkEnvelope) -> Decoded:
        raise KeyError("boom")

    monkeypatch.setitem(CODECS, "crashy", crashing_codec)

    with pytest.raises(DecodeError, match="crashy codec failed: KeyError") as caught:
        decode_uplink("crashy", mqtt({}))
    assert isinstance(caught.value.__cause__, KeyError)


def test_a_binary_model_given_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no binary payload"):
        decode_uplink("lorawan-lpp", mqtt({"values": {"t": 1}}))


@settings(database=None)
@given(
    model=st.sampled_from(sorted(CODECS)),
    payload_hex=st.none() | st.binary(max_size=14).map(bytes.hex),
    payload_json=json_values,
    kind=st.sampled_from(["up", "state", None]),
)
def test_decode_uplink_never_raises_anything_but_decode_error(
    model: str, payload_hex: str | None, payload_json: Any, kind: str | None
) -> None:
    envelope = UplinkEnvelope(
        source="mqtt",
        device="D",
        received=T,
        payload_hex=payload_hex,
        payload_json=payload_json,
        meta={"kind": kind},
    )
    result = outcome(lambda env: decode_uplink(model, env), envelope)
    if isinstance(result, DecodeError):
        assert result.reason
    else:
        assert result.points or result.events
