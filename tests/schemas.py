"""The JSON Schemas documented for the Kafka topics' subscribers (``docs/schemas``): tests check
what the pipeline really publishes against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


@cache
def schema(topic: str) -> dict[str, Any]:
    """The schema of ``topic`` (``uplinks``, ``readings``, ``device-events``, ...)."""
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{topic}.schema.json").read_text())
    return loaded


def check(topic: str, value: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``value`` (decoded JSON) matches ``topic``'s."""
    jsonschema.validate(value, schema(topic))
