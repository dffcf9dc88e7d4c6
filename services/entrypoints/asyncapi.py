"""The AsyncAPI 3 document of the Kafka topics, ``docs/asyncapi.json``, generated from what the
code and its tests already agree on: the topic names of :mod:`services.platform.events` with the
default prefix of :class:`services.platform.Settings`, and the JSON Schemas of ``docs/schemas``
(the tests check what the pipeline publishes against them, ``tests/schemas.py``).

``python -m services.entrypoints.asyncapi`` (``make docs``) writes the file; ``--check`` only says
whether it is up to date (``tests/unit/test_asyncapi.py`` checks it too).
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from typing import Any

from services.entrypoints.generated_docs import ROOT, write_or_check
from services.platform import (
    TOPIC_COMMANDS,
    TOPIC_DEAD_LETTER,
    TOPIC_DEVICE_EVENTS,
    TOPIC_READINGS,
    TOPIC_UPLINKS,
    Settings,
)

OUTPUT = ROOT / "docs" / "asyncapi.json"
SCHEMAS = ROOT / "docs" / "schemas"
#: The Kafka bindings' version (AsyncAPI bindings 0.5.0: channel ``topic``/``partitions``,
#: message ``key``).
KAFKA_BINDING = "0.5.0"

#: The topics offered to subscribers (``services.platform.events.PUBLIC_TOPICS``), in order.
TOPICS = (TOPIC_UPLINKS, TOPIC_READINGS, TOPIC_DEVICE_EVENTS, TOPIC_COMMANDS, TOPIC_DEAD_LETTER)
_DEVICE_KEY = "the device id (canonical: upper-case hex for Sigfox ids and DevEUIs)"


#: What each topic's message key is (every public topic of :mod:`services.platform.events` has
#: the device id unless said here).
KEYS = {
    TOPIC_DEAD_LETTER: _DEVICE_KEY + " when it is known; the MQTT topic of an MQTT message whose"
    " device could not be read; empty for a callback body that could not be read",
}

_DESCRIPTION = """\
The Kafka topics hivepipe publishes for subscribers (docs/topics.md).

* Values are UTF-8 JSON; each message's payload schema below is the JSON Schema of
  `docs/schemas/<topic>.schema.json`.
* Keys are UTF-8 strings, the device id: one device's messages stay in order on one partition.
* Topic names take the prefix `HIVEPIPE_TOPIC_PREFIX` (default `{prefix}`, used below).
* Delivery is at-least-once: a message may come twice after a worker restart; each carries what
  deduplicates it (docs/topics.md).
"""


def _schema(topic: str) -> dict[str, Any]:
    """The topic's JSON Schema as an AsyncAPI Schema Object (a superset of JSON Schema draft 7;
    the schemas use nothing of 2020-12 beyond it): without ``$schema`` and ``$id``."""
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{topic}.schema.json").read_text())
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id")}


def _summary(topic: str, schema: dict[str, Any]) -> str:
    """The schema's title without its ``<topic>: `` head, as a sentence."""
    text = str(schema.get("title", topic)).removeprefix(f"{topic}:").strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _version() -> str:
    try:
        return metadata.version("hivepipe")
    except metadata.PackageNotFoundError:  # pragma: no cover - a checkout without install
        return "0.0.0"


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a JSON value."""
    prefix = Settings.model_fields["topic_prefix"].default
    partitions = Settings.model_fields["partitions"].default
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for topic in TOPICS:
        address = f"{prefix}{topic}"
        schema = _schema(topic)
        summary = _summary(topic, schema)
        channels[topic] = {
            "address": address,
            "title": address,
            "description": summary,
            "messages": {topic: {"$ref": f"#/components/messages/{topic}"}},
            "bindings": {
                "kafka": {
                    "topic": address,
                    "partitions": partitions,
                    "bindingVersion": KAFKA_BINDING,
                }
            },
        }
        operations[f"publish-{topic}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"hivepipe publishes on {address}; subscribers consume it.",
            "messages": [{"$ref": f"#/channels/{topic}/messages/{topic}"}],
        }
        messages[topic] = {
            "name": topic,
            "title": address,
            "summary": summary,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{topic}"},
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": KEYS.get(topic, _DEVICE_KEY)},
                    "bindingVersion": KAFKA_BINDING,
                }
            },
        }
        schemas[topic] = schema
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "hivepipe Kafka topics",
            "version": _version(),
            "description": _DESCRIPTION.format(prefix=prefix),
        },
        "defaultContentType": "application/json",
        "servers": {
            "embedded": {
                "host": "127.0.0.1:{port}",
                "protocol": "kafka",
                "title": "The embedded broker of `hivepipe up`",
                "description": (
                    "tansu, the Kafka-compatible broker `hivepipe up` (`make run`) starts when "
                    "`HIVEPIPE_KAFKA` is unset; its address is in `.hivepipe/urls.json`. "
                    "docs/topics.md gives the client settings it needs."
                ),
                "variables": {
                    "port": {"description": "the port `hivepipe up` chose (.hivepipe/urls.json)"}
                },
            },
            "production": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "title": "A Kafka cluster",
                "description": "The cluster named by `HIVEPIPE_KAFKA` (host:port[,...]).",
                "variables": {
                    "bootstrap": {
                        "description": "a bootstrap server of the cluster",
                        "examples": ["kafka-1.example.net:9092"],
                    }
                },
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    """The text of ``docs/asyncapi.json`` as the code and schemas are now."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(OUTPUT, render(), argv, wrote=f"{len(TOPICS)} topics")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
