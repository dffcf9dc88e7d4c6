"""Codec registry: device model -> pure ``UplinkEnvelope -> Decoded`` function.

Adding a codec is one module under ``services/codecs/`` and one line in ``CODECS``.
A codec never raises anything but :class:`DecodeError` (with a human reason).
"""

from __future__ import annotations

from services.codecs.base import Codec, Decoded, DecodeError
from services.codecs.json_measurements import decode_json_measurements
from services.codecs.lpp import decode_lpp
from services.codecs.orbit_uplink import decode_orbit
from services.codecs.relay import decode_relay_controller
from services.platform import UplinkEnvelope

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
