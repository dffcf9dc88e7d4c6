"""What every codec shares: its result (:class:`Decoded`), its one error (:class:`DecodeError`),
and the payload bytes of an envelope."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.platform import DataPoint, DeviceEvent, UplinkEnvelope


class DecodeError(ValueError):
    """The payload does not decode; ``reason`` says why (kept and reported, never dropped)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one uplink decodes to: data points, device events, and a relay state report."""

    points: tuple[DataPoint, ...] = ()
    events: tuple[DeviceEvent, ...] = ()
    state: dict[str, Any] | None = field(default=None)


Codec = Callable[[UplinkEnvelope], Decoded]


_HEX = re.compile(r"[0-9A-Fa-f]+")


def payload_bytes(envelope: UplinkEnvelope) -> bytes:
    """Return the envelope's binary payload; raise DecodeError if absent, empty or not hex."""
    payload_hex = envelope.payload_hex
    if payload_hex is None:
        raise DecodeError("no binary payload (payload_hex is not set)")
    if not isinstance(payload_hex, str):
        raise DecodeError(f"payload_hex is not a string: {type(payload_hex).__name__}")
    if not payload_hex:
        raise DecodeError("empty payload")
    if not _HEX.fullmatch(payload_hex):
        # Checked here because bytes.fromhex would skip whitespace.
        raise DecodeError(f"payload is not hex: {payload_hex[:32]!r}")
    if len(payload_hex) % 2:
        raise DecodeError(f"odd number of hex digits ({len(payload_hex)})")
    return bytes.fromhex(payload_hex)
