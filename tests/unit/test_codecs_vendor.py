"""Real vendor codecs of the TTN Device Repository (``tests/data/codecs``) against the examples
published beside them: each example's input decodes to its output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.codecs import CodecFailure, UplinkInput, UplinkOutput, compile_codec, flatten_points

CODECS = Path(__file__).resolve().parents[1] / "data" / "codecs"
VENDOR = ("dragino-lht65", "milesight-em300-th", "example-windsensor")


def vendor_codec(name: str) -> tuple[str, dict[str, Any]]:
    """A vendor codec's source and its codec YAML (with the examples)."""
    source = (CODECS / f"{name}.js").read_text()
    return source, yaml.safe_load((CODECS / f"{name}-codec.yaml").read_text())


def uplink_examples() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, example)
        for name in VENDOR
        for example in vendor_codec(name)[1]["uplinkDecoder"]["examples"]
    ]


@pytest.mark.parametrize(
    ("name", "example"),
    uplink_examples(),
    ids=[f"{n}: {e['description']}" for n, e in uplink_examples()],
)
def test_each_published_uplink_example(name: str, example: dict[str, Any]) -> None:
    source, _ = vendor_codec(name)
    codec = compile_codec(source)
    result = codec.decode_uplink(
        UplinkInput(bytes(example["input"]["bytes"]), example["input"]["fPort"], 1_700_000_000.0)
    )
    expected = example["output"]
    if "errors" in expected:
        assert isinstance(result, CodecFailure)
        assert result.errors == tuple(expected["errors"])
        return
    assert isinstance(result, UplinkOutput), result
    assert result.data == expected["data"]


def test_the_milesight_normalized_payload_and_its_points() -> None:
    source, spec = vendor_codec("milesight-em300-th")
    example = spec["uplinkDecoder"]["examples"][0]
    result = compile_codec(source).decode_uplink(
        UplinkInput(bytes(example["input"]["bytes"]), 1, 1_700_000_000.0)
    )
    assert isinstance(result, UplinkOutput)
    # The codec's own normalizeUplink (the example's normalizedOutput is from another version:
    # tests/data/codecs/README.md).
    assert result.normalized == {
        "air": {"temperature": 20.0, "relativeHumidity": 30.0},
        "battery": 50,
    }
    points = flatten_points("D", 1_700_000_000.0, result.data, result.normalized, {})
    assert sorted((p.metric, p.value, p.unit) for p in points) == [
        ("air.relativeHumidity", 30.0, "%"),
        ("air.temperature", 20.0, "°C"),
        ("battery", 50.0, "V"),
    ]


def test_the_windsensor_downlink_examples() -> None:
    source, spec = vendor_codec("example-windsensor")
    codec = compile_codec(source)
    for example in spec["downlinkEncoder"]["examples"]:
        encoded = codec.encode_downlink(example["input"]["data"])
        assert not isinstance(encoded, CodecFailure), encoded
        assert list(encoded.payload) == example["output"]["bytes"]
        assert encoded.port == example["output"]["fPort"]
    for example in spec["downlinkDecoder"]["examples"]:
        decoded = codec.decode_downlink(bytes(example["input"]["bytes"]), example["input"]["fPort"])
        assert decoded == example["output"]["data"]
