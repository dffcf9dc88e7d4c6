"""Codec registry: device model -> pure ``UplinkEnvelope -> Decoded`` function.

Adding a codec is one module under ``services/codecs/`` and one line in ``CODECS``.
A codec never raises anything but :class:`DecodeError` (with a human reason).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.events import DataPoint, DeviceEvent, UplinkEnvelope


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


# The codec modules import DecodeError and Decoded from this package, so they are imported only
# once those are defined.
from services.codecs.json_measurements import decode_json_measurements  # noqa: E402
from services.codecs.lpp import decode_lpp  # noqa: E402
from services.codecs.orbit import decode_orbit  # noqa: E402
from services.codecs.relay import decode_relay_controller  # noqa: E402

#: Device model -> codec. ``relay-controller`` dispatches on ``meta["kind"]``: ``up`` messages
#: are JSON measurements, ``state`` messages are state reports (see ``decode_relay_controller``).
CODECS: dict[str, Codec] = {
    "orbit-t": decode_orbit,
    "orbit-th": decode_orbit,
    "orbit-lite": decode_orbit,
    "lorawan-lpp": decode_lpp,
    "json": decode_json_measurements,
    "relay-controller": decode_relay_controller,
}


def decode_uplink(model: str, envelope: UplinkEnvelope) -> Decoded:
    """Decode one uplink with the codec of the device's model.

    Raises only :class:`DecodeError`: for a model without a codec, for a payload the codec
    rejects, and for any unexpected exception inside a codec (its type and message become the
    reason), so that a consumer never crashes on a payload.
    """
    codec = CODECS.get(model)
    if codec is None:
        raise DecodeError(f"no codec for device model {model!r}")
    try:
        return codec(envelope)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{model} codec failed: {type(exc).__name__}: {exc}") from exc
