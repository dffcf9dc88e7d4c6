"""MQTT messages to envelopes: ``{prefix}/{id}/up`` (JSON measurement), ``{prefix}/{id}/state``.

Pure functions: the MQTT adapter (``ingest/mqtt/``) gives each received message here and
publishes what comes back, an envelope for ``uplinks`` or a :class:`Rejected` record for
``dead-letter`` (a message that can never become valid: it is acknowledged to the broker once
kept there).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

import orjson

from services.platform import UplinkEnvelope

KINDS = ("up", "state")
#: The id of an MQTT device, as ``services.devices.ids`` validates it.
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message kept on ``dead-letter``: the envelope-like ``record`` (with ``error``)."""

    key: str
    reason: str
    record: dict[str, Any]


def subscriptions(prefix: str, *, group: str | None) -> list[str]:
    """The topic filters to subscribe, shared (``$share/<group>/...``) when ``group`` is set."""
    filters = [f"{prefix}/+/{kind}" for kind in KINDS]
    return [f"$share/{group}/{f}" for f in filters] if group else filters


def parse_topic(topic: str, prefix: str) -> tuple[str, str] | None:
    """``(device, kind)`` of ``{prefix}/{device}/{kind}``; None for any other topic."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or parts[1] not in KINDS or not DEVICE_ID.fullmatch(parts[0]):
        return None
    return parts[0], parts[1]


def _payload_fields(payload: bytes, max_bytes: int) -> dict[str, Any]:
    if len(payload) > max_bytes:
        return {"payload_size": len(payload)}
    try:
        return {"payload_text": payload.decode()}
    except UnicodeDecodeError:
        return {"payload_base64": base64.b64encode(payload).decode()}


def rejected(
    topic: str,
    payload: bytes,
    *,
    device: str | None,
    kind: str | None,
    received: float,
    reason: str,
    detail: str,
    max_bytes: int,
) -> Rejected:
    record: dict[str, Any] = {
        "source": "mqtt",
        "device": device,
        "received": received,
        "meta": {"topic": topic, **({"kind": kind} if kind else {})},
        **_payload_fields(payload, max_bytes),
        "error": f"{reason}: {detail}" if detail else reason,
    }
    return Rejected(key=device or topic[:256], reason=reason, record=record)


def mqtt_uplink(
    topic: str, payload: bytes, *, prefix: str, received: float, max_bytes: int
) -> UplinkEnvelope | Rejected:
    """The envelope of one MQTT message (``meta["kind"]`` is ``up`` or ``state``), or why not.

    Refused (dead-letter): a topic that is not ``{prefix}/{id}/up|state`` with a valid id, a
    payload over ``max_bytes`` (kept as its size only), a payload that is not JSON.
    """
    received = round(received, 3)
    parsed = parse_topic(topic, prefix)
    if parsed is None:
        return rejected(
            topic,
            payload,
            device=None,
            kind=None,
            received=received,
            reason="invalid_topic",
            detail=f"expected {prefix}/<id>/up or {prefix}/<id>/state",
            max_bytes=max_bytes,
        )
    device, kind = parsed

    def refuse(reason: str, detail: str) -> Rejected:
        return rejected(
            topic,
            payload,
            device=device,
            kind=kind,
            received=received,
            reason=reason,
            detail=detail,
            max_bytes=max_bytes,
        )

    if len(payload) > max_bytes:
        return refuse("payload_too_large", f"{len(payload)} bytes > {max_bytes}")
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return refuse("invalid_json", str(exc)[:200])
    envelope = UplinkEnvelope(
        source="mqtt",
        device=device,
        received=received,
        payload_json=value,
        meta={"kind": kind, "topic": topic},
    )
    try:
        orjson.dumps(envelope)  # orjson reads 1,024 levels of nesting but writes only 255
    except orjson.JSONEncodeError as exc:
        return refuse("invalid_json", str(exc)[:200])
    return envelope
