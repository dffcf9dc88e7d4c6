"""Codecs: pure ``UplinkEnvelope -> Decoded`` functions, one module per payload format, and the
registry that picks one by device model (``registry.CODECS``)."""

from services.codecs.base import Codec, Decoded, DecodeError, payload_bytes
from services.codecs.registry import CODECS, decode_uplink

__all__ = ["CODECS", "Codec", "DecodeError", "Decoded", "decode_uplink", "payload_bytes"]
