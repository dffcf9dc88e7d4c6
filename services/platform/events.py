"""Event schemas shared by every process: what travels on the Kafka topics.

The shapes follow ``shared/specs/wire-formats.md`` (topics) and ``api-contract.md`` (the data
point). They are plain frozen dataclasses with ``to_json``/``from_json`` helpers built on orjson, so
the hot path does not pay for pydantic validation of values we produced ourselves.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

Source = Literal["sigfox", "ttn", "chirpstack", "mqtt"]

#: Topic names without the configurable prefix (``Settings.topic_prefix``, default ``hivepipe.``).
TOPIC_UPLINKS = "uplinks"
TOPIC_READINGS = "readings"
TOPIC_DEVICE_EVENTS = "device-events"
TOPIC_COMMANDS = "commands"
TOPIC_DEAD_LETTER = "dead-letter"
#: Internal: the ``readings`` messages of the devices that had webhooks when their points were
#: stored, for the webhook agent alone (consuming every ``readings`` message, those of devices
#: without webhooks too, cost the worker about a fifth of its CPU at a steady load: issue #16).
TOPIC_WEBHOOK_READINGS = "webhook-readings"
PUBLIC_TOPICS = (
    TOPIC_UPLINKS,
    TOPIC_READINGS,
    TOPIC_DEVICE_EVENTS,
    TOPIC_COMMANDS,
    TOPIC_DEAD_LETTER,
)
INTERNAL_TOPICS = (TOPIC_WEBHOOK_READINGS,)
ALL_TOPICS = PUBLIC_TOPICS + INTERNAL_TOPICS


def dumps(value: Any) -> bytes:
    """Serialise a JSON value (dataclasses included) with orjson."""
    return orjson.dumps(value)


def loads(raw: bytes | str) -> Any:
    """Parse a JSON value with orjson."""
    return orjson.loads(raw)


@dataclass(frozen=True, slots=True)
class UplinkEnvelope:
    """The raw envelope of one received, deduplicated uplink (topic ``uplinks``).

    ``device`` is the canonical device id (upper-case for hex ids). Exactly one of
    ``payload_hex`` (binary payloads: Sigfox, LoRaWAN) and ``payload_json`` (MQTT JSON) is set.
    ``meta`` carries seq, f_cnt, f_port, rssi, snr, gateway/station and the MQTT ``kind``
    (``up`` or ``state``) where they apply.
    """

    source: Source
    device: str
    received: float
    payload_hex: str | None = None
    payload_json: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    downlink_requested: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UplinkEnvelope:
        return cls(
            id=str(data["id"]),
            source=data["source"],
            device=str(data["device"]),
            received=float(data["received"]),
            payload_hex=data.get("payload_hex"),
            payload_json=data.get("payload_json"),
            meta=dict(data.get("meta") or {}),
            downlink_requested=bool(data.get("downlink_requested", False)),
        )


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One decoded data point, the shape of api-contract.md (``readings`` topic, webhooks, API)."""

    device: str
    time: float
    metric: str
    value: float
    unit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Whole seconds are integers on the wire, as in the contract's example.
        t: float | int = int(self.time) if float(self.time).is_integer() else self.time
        return {
            "device": self.device,
            "time": t,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataPoint:
        return cls(
            device=str(data["device"]),
            time=float(data["time"]),
            metric=str(data["metric"]),
            value=float(data["value"]),
            unit=data.get("unit"),
        )


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device event (topic ``device-events``): ``{"device", "time", "type", ...}``.

    Types in use: ``param_ack`` (Orbit 0x10), ``status`` (Orbit 0x20), ``decode_error``,
    ``param_queued``, ``param_replaced``, ``param_dropped``, ``downlink_sent``, ``param_acked``,
    ``param_failed``, ``downlink_ack``, ``downlink_nack``, ``downlink_sent_ns``,
    ``downlink_failed``, ``state`` (relay controller report).
    """

    device: str
    time: float
    type: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "time": self.time, "type": self.type, **self.data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceEvent:
        rest = {k: v for k, v in data.items() if k not in ("device", "time", "type")}
        return cls(
            device=str(data["device"]), time=float(data["time"]), type=str(data["type"]), data=rest
        )
