"""The JavaScript codec sandbox (``services/codecs/javascript.py``): the codec functions of the
contract, ES5 and ES2015+, each failure class, fresh state per uplink, and the flattening of
decoded data into points."""

from __future__ import annotations

import time

import pytest

from services.codecs import (
    CodecFailure,
    CodecInvalid,
    CodecLimits,
    UplinkInput,
    UplinkOutput,
    compile_codec,
    flatten_points,
)
from services.codecs.custom import decoded_of, uplink_input
from services.platform import DataPoint, UplinkEnvelope

UPLINK = UplinkInput(bytes([0x01, 0x02, 0x03]), 2, 1_700_000_000.0)

ES5 = """
var SCALE = 10;
function decodeUplink(input) {
  var data = {};
  data.first = input.bytes[0] / SCALE;
  data.port = input.fPort;
  data.time = input.recvTime.getTime();
  return { data: data, warnings: input.bytes.length < 3 ? ["short"] : [] };
}
"""

ES2015 = """
const SCALE = 10;
class Reader {
  constructor(bytes) { this.bytes = bytes; this.at = 0; }
  u8() { return this.bytes[this.at++]; }
}
const decodeUplink = ({ bytes, fPort }) => {
  const r = new Reader(bytes);
  let [a, b] = [r.u8(), r.u8()];
  const label = `port ${fPort}`;
  return { data: { a: a / SCALE, b, label, ...{ spread: true } } };
};
"""

HOSTILE = """
function decodeUplink(input) {
  switch (input.bytes[0]) {
    case 1: while (true) {}
    case 2: var a = []; while (true) { a.push(new Array(100000).fill(1)); }
    case 3: return { data: { x: null.y } };
    case 4: return 42;
    case 5: var s = "x"; for (var i = 0; i < 17; i++) { s += s; } return { data: { s: s } };
    case 6: throw "a plain string";
    case 7: return { errors: ["bad frame"] };
    case 8: return { data: [1, 2] };
    default: return { data: { ok: input.bytes[0] } };
  }
}
"""


def _one(codec_source: str, payload: bytes = b"\x01\x02\x03", port: int = 2) -> object:
    return compile_codec(codec_source).decode_uplink(UplinkInput(payload, port, 1_700_000_000.0))


def test_es5_codec_decodes_with_a_fresh_input() -> None:
    result = _one(ES5)
    assert result == UplinkOutput(
        data={"first": 0.1, "port": 2, "time": 1_700_000_000_000}, normalized=None, warnings=()
    )
    short = _one(ES5, b"\x05")
    assert isinstance(short, UplinkOutput)
    assert short.warnings == ("short",)


def test_es2015_codec_decodes() -> None:
    assert _one(ES2015) == UplinkOutput(data={"a": 0.1, "b": 2, "label": "port 2", "spread": True})


def test_the_codec_functions_are_detected() -> None:
    codec = compile_codec(
        "function decodeUplink(i) { return {data: {}}; }\n"
        "function normalizeUplink(i) { return {data: {}}; }\n"
        "function encodeDownlink(i) { return {bytes: [1], fPort: 1}; }\n"
        "function decodeDownlink(i) { return {data: {}}; }\n"
    )
    assert codec.functions == {
        "decodeUplink",
        "normalizeUplink",
        "encodeDownlink",
        "decodeDownlink",
    }


def test_legacy_ttn_v2_decoder() -> None:
    result = _one("function Decoder(bytes, port) { return {b: bytes[0], port: port}; }")
    assert result == UplinkOutput(data={"b": 1, "port": 2})


def test_legacy_chirpstack_v3_decode_gets_the_variables() -> None:
    codec = compile_codec(
        "function Decode(fPort, bytes, variables) { return {b: bytes[1], k: variables.k}; }",
        variables={"k": "v"},
    )
    assert codec.decode_uplink(UPLINK) == UplinkOutput(data={"b": 2, "k": "v"})


def test_decode_uplink_sees_the_variables_as_input_variables() -> None:
    codec = compile_codec(
        "function decodeUplink(i) { return {data: {k: i.variables.k}}; }", variables={"k": 3}
    )
    assert codec.decode_uplink(UPLINK) == UplinkOutput(data={"k": 3})


def test_normalize_uplink_gives_the_normalized_payload() -> None:
    codec = compile_codec(
        "function decodeUplink(i) { return {data: {t: i.bytes[0] + 20}}; }\n"
        "function normalizeUplink(i) { return {data: {air: {temperature: i.data.t}},"
        " warnings: ['approx']}; }"
    )
    assert codec.decode_uplink(UPLINK) == UplinkOutput(
        data={"t": 21}, normalized={"air": {"temperature": 21}}, warnings=("approx",)
    )


def test_no_state_survives_from_one_uplink_to_the_next() -> None:
    codec = compile_codec(
        "var calls = 0;\n"
        "function decodeUplink(i) {\n"
        "  calls++;\n"
        "  implicitGlobal = (typeof implicitGlobal === 'undefined' ? 0 : implicitGlobal) + 1;\n"
        "  parseInt = function () { return -1; };\n"
        "  return {data: {calls: calls, g: implicitGlobal, p: parseInt('7')}};\n"
        "}"
    )
    results = codec.decode_uplinks([UPLINK] * 3)
    assert results == [UplinkOutput(data={"calls": 1, "g": 1, "p": -1})] * 3
    again = codec.decode_uplink(UPLINK)
    assert again == UplinkOutput(data={"calls": 1, "g": 1, "p": -1})


def test_no_timers_no_require_no_network() -> None:
    result = _one(
        "function decodeUplink(i) { return {data: {t: typeof setTimeout, r: typeof require,"
        " f: typeof fetch, x: typeof XMLHttpRequest, p: typeof process,"
        " w: typeof WebAssembly}}; }"
    )
    assert result == UplinkOutput(data={k: "undefined" for k in ("t", "r", "f", "x", "p", "w")})


@pytest.mark.parametrize(
    ("source", "message", "line"),
    [
        ("var a = 1;\nvar b = ;\n", "SyntaxError: Unexpected token ';'", 2),
        ("function decodeUplink(input) {\n  return {data: {}};\n", "SyntaxError", 3),
        ("var a = 1;\nthrow new Error('at the top');", "Error: at the top", 2),
        ("var x = 1;", "defines none of decodeUplink", None),
    ],
)
def test_a_codec_that_does_not_compile_names_the_message_and_line(
    source: str, message: str, line: int | None
) -> None:
    with pytest.raises(CodecInvalid) as caught:
        compile_codec(source)
    assert message in caught.value.message
    assert caught.value.line == line


def test_a_source_over_the_limit_is_refused() -> None:
    with pytest.raises(CodecInvalid, match="bytes, more than"):
        compile_codec("//" + "x" * (256 * 1024) + "\nfunction decodeUplink(i) {}")


def test_a_100_kb_codec_decodes_well_within_the_time_limit() -> None:
    library = "".join(
        f"var T{i} = [{','.join(str((i + j) % 256) for j in range(64))}];\n"
        f"function h{i}(b) {{ return (b[0] ^ T{i}[b[1] % 64]) >>> 0; }}\n"
        for i in range(400)
    )
    source = library + "function decodeUplink(i) { return {data: {v: h399(i.bytes)}}; }"
    assert len(source) > 100_000
    codec = compile_codec(source)
    started = time.perf_counter()
    results = codec.decode_uplinks([UPLINK] * 200)
    per_uplink = (time.perf_counter() - started) / 200
    assert all(isinstance(r, UplinkOutput) for r in results)
    assert per_uplink < 0.005, per_uplink  # the limit is 50 ms; typically about 0.05 ms


def _hostile(first_bytes: list[int], timeout_ms: int = 50) -> list[UplinkOutput | CodecFailure]:
    codec = compile_codec(HOSTILE, limits=CodecLimits(timeout_ms=timeout_ms))
    return codec.decode_uplinks([UplinkInput(bytes([b]), 1, 1.0) for b in first_bytes])


def test_each_failure_class_fails_only_its_uplink() -> None:
    started = time.perf_counter()
    results = _hostile([9, 1, 9, 2, 9, 3, 4, 5, 6, 7, 8, 9])
    elapsed = time.perf_counter() - started
    ok = UplinkOutput(data={"ok": 9})
    assert results[0] == results[2] == results[4] == results[11] == ok
    assert results[1] == CodecFailure("codec_timeout")
    # Filling 32 MiB may take longer than the 50 ms: whichever limit comes first stops it.
    assert isinstance(results[3], CodecFailure)
    assert results[3].kind in ("codec_memory", "codec_timeout")
    failure = results[5]
    assert isinstance(failure, CodecFailure)
    assert (
        failure.reason == "codec_exception: TypeError: Cannot read properties of null (reading 'y')"
    )
    assert failure.line == 6
    assert results[6] == CodecFailure("codec_result: the codec returned a number, not an object")
    assert isinstance(results[7], CodecFailure)
    assert results[7].reason.startswith("codec_result: the output is too large")
    assert results[8] == CodecFailure("codec_exception: a plain string")
    assert results[9] == CodecFailure("codec_error: bad frame", errors=("bad frame",))
    assert results[10] == CodecFailure("codec_result: data is an array, not an object")
    assert elapsed < 5, elapsed


def test_a_codec_that_loops_on_every_uplink_costs_a_few_time_limits_not_one_each() -> None:
    started = time.perf_counter()
    results = _hostile([1] * 200)
    elapsed = time.perf_counter() - started
    assert results == [CodecFailure("codec_timeout")] * 200
    assert elapsed < 2, elapsed  # 1 chunk + 3 single calls, not 200 x 50 ms


def test_the_isolate_works_again_after_a_memory_failure() -> None:
    results = _hostile([2, 9, 2, 9], timeout_ms=5000)  # time enough to reach the memory limit
    assert results == [
        CodecFailure("codec_memory"),
        UplinkOutput(data={"ok": 9}),
        CodecFailure("codec_memory"),
        UplinkOutput(data={"ok": 9}),
    ]


def test_encode_and_decode_downlink() -> None:
    codec = compile_codec(
        "function decodeUplink(i) { return {data: {}}; }\n"
        "function encodeDownlink(i) { if (i.data.on === undefined) return {errors: ['on?']};"
        " return {bytes: [i.data.on ? 1 : 0], fPort: 10, warnings: ['w']}; }\n"
        "function decodeDownlink(i) { return {data: {on: i.bytes[0] === 1, port: i.fPort}}; }"
    )
    encoded = codec.encode_downlink({"on": True})
    assert (encoded.payload, encoded.port, encoded.warnings) == (b"\x01", 10, ("w",))  # type: ignore[union-attr]
    assert codec.decode_downlink(b"\x01", 10) == {"on": True, "port": 10}
    assert codec.encode_downlink({}) == CodecFailure("codec_error: on?", errors=("on?",))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("return {bytes: [256], fPort: 1};", "bytes must be"),
        ("return {bytes: [], fPort: 1};", "bytes must be"),
        ("return {bytes: [1], fPort: 0};", "fPort must be"),
        ("return 'x';", "encodeDownlink returned a string"),
    ],
)
def test_an_invalid_downlink_is_a_codec_result(body: str, reason: str) -> None:
    codec = compile_codec(
        f"function decodeUplink(i) {{ return {{data: {{}}}}; }}\n"
        f"function encodeDownlink(i) {{ {body} }}"
    )
    outcome = codec.encode_downlink({})
    assert isinstance(outcome, CodecFailure)
    assert outcome.kind == "codec_result"
    assert reason in outcome.reason


# --- flattening ------------------------------------------------------------------------------


def test_numeric_leaves_become_points_named_by_their_path() -> None:
    data = {
        "air": {"temperature": 21.5, "label": "x"},
        "sensors": [{"value": 1}, {"value": 2, "ok": True}],
        "alarm": False,
        "nothing": None,
        "inf": float("inf"),
    }
    points = flatten_points("D", 100.0, data, None, {"air.temperature": "°C"})
    assert sorted((p.metric, p.value, p.unit) for p in points) == [
        ("air.temperature", 21.5, "°C"),
        ("alarm", 0.0, None),
        ("sensors.0.value", 1.0, None),
        ("sensors.1.ok", 1.0, None),
        ("sensors.1.value", 2.0, None),
    ]
    assert {p.time for p in points} == {100.0}


def test_normalized_payload_has_the_schema_units_unless_the_model_says_otherwise() -> None:
    normalized = {"air": {"temperature": 20.0, "relativeHumidity": 30.0}, "battery": 3.1}
    points = flatten_points("D", 5.0, {"raw": 1}, normalized, {"battery": "mV"})
    assert sorted((p.metric, p.value, p.unit) for p in points) == [
        ("air.relativeHumidity", 30.0, "%"),
        ("air.temperature", 20.0, "°C"),
        ("battery", 3.1, "mV"),
    ]


def test_a_normalized_array_gives_points_at_each_measurements_time() -> None:
    normalized = [
        {"time": "2023-11-14T22:13:20Z", "air": {"temperature": 20.0}},
        {"time": "2023-11-14T22:23:20+00:00", "air": {"temperature": 21.0}},
        {"air": {"temperature": 22.0}},
    ]
    points = flatten_points("D", 1_700_001_000.0, {}, normalized, {})
    assert sorted((p.time, p.metric, p.value) for p in points) == [
        (1_700_000_000.0, "air.temperature", 20.0),
        (1_700_000_600.0, "air.temperature", 21.0),
        (1_700_001_000.0, "air.temperature", 22.0),
    ]


def test_an_uplink_gives_points_a_decoded_event_and_the_state() -> None:
    envelope = UplinkEnvelope(
        source="ttn", device="D1", received=7.0, payload_hex="0102", meta={"f_port": 3}
    )
    assert uplink_input(envelope) == UplinkInput(b"\x01\x02", 3, 7.0)
    decoded = decoded_of(envelope, UplinkOutput(data={"t": 1, "s": "x"}), {})
    assert decoded.points == (DataPoint("D1", 7.0, "t", 1.0, None),)
    assert decoded.state == {"t": 1, "s": "x"}
    (event,) = decoded.events
    assert event.type == "decoded"
    assert event.data["data"] == {"t": 1, "s": "x"}


def test_an_isolate_dropped_without_close_is_freed_by_the_next_under_the_lock() -> None:
    """An isolate nobody closed is not freed by a finaliser on whichever thread collects it
    (the engine's own loop thread among them): the next isolate opened or closed frees it,
    under the isolate lock."""
    import gc

    from services.codecs import javascript

    isolate = javascript._open_isolate(javascript.CodecLimits())
    generator = isolate.closer.gen  # type: ignore[attr-defined]
    assert generator.gi_frame is not None  # open: suspended inside mini-racer's context
    del isolate
    gc.collect()
    assert generator.gi_frame is not None  # parked, not freed by the collection
    javascript._open_isolate(javascript.CodecLimits()).close()
    assert generator.gi_frame is None  # freed by the next thread under the lock


def test_isolates_open_and_close_on_many_threads_at_once() -> None:
    """Codecs compiled, used, closed and dropped on eight threads while another collects."""
    import gc
    import threading

    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        try:
            for i in range(6):
                codec = compile_codec(
                    "function decodeUplink(input) { return {data: {n: input.bytes.length}}; }"
                )
                assert codec.decode_uplink(UplinkInput(b"\x01" * (i % 4), 1, 1_700_000_000.0))
                if i % 3:
                    codec.close()  # else dropped: freed when collected
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def collect() -> None:
        while not stop.wait(0.005):
            gc.collect()

    collector = threading.Thread(target=collect)
    collector.start()
    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    collector.join()
    assert errors == []


def test_v8_starts_without_memory_protection_keys() -> None:
    """On a CPU with memory protection keys, V8 guarded its tables with a key that threads
    started by Python did not all hold: creating an isolate on one segfaulted (seen on an AMD
    EPYC machine, in CI). A fresh interpreter shows the flags V8 starts with."""
    import subprocess
    import sys

    script = (
        "import py_mini_racer._dll as d\n"
        "seen = []\n"
        "real = d._open_dll\n"
        "def spy(flags):\n"
        "    seen.append(tuple(flags))\n"
        "    return real(seen[-1])\n"
        "d._open_dll = spy\n"
        "from services.codecs import compile_codec\n"
        "compile_codec('function decodeUplink(input) { return {data: {}}; }').close()\n"
        "print(seen)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "--no-memory-protection-keys" in out
    assert "--single-threaded" in out
