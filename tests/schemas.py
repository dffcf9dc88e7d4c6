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


ASYNCAPI = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"


@cache
def asyncapi_document() -> dict[str, Any]:
    """``docs/asyncapi.json`` as committed."""
    loaded: dict[str, Any] = json.loads(ASYNCAPI.read_text(encoding="utf-8"))
    return loaded


def asyncapi_payload(topic: str) -> dict[str, Any]:
    """The payload schema ``docs/asyncapi.json`` states for the message of ``topic``'s channel."""
    doc = asyncapi_document()
    (ref,) = doc["channels"][topic]["messages"].values()
    message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
    found: dict[str, Any] = doc["components"]["schemas"][message["payload"]["$ref"].rsplit("/")[-1]]
    return found


def check_asyncapi(topic: str, key: str, value: bytes) -> None:
    """A message as Kafka carries it (a string key, JSON bytes) matches ``docs/asyncapi.json``."""
    assert isinstance(key, str)
    jsonschema.Draft7Validator(asyncapi_payload(topic)).validate(json.loads(value))
