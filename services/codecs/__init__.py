"""Codecs: pure ``UplinkEnvelope -> Decoded`` functions, one module per payload format, and the
registry that picks one by device model (``registry.CODECS``); and the accounts' own device
models with their JavaScript codecs (``javascript``: the sandbox, ``model_store``: the table,
``custom``: the worker's decoding of their uplinks, ``flattening``: decoded data to points)."""

from services.codecs import model_store
from services.codecs.base import Codec, Decoded, DecodeError, payload_bytes
from services.codecs.custom import CodecCache, CustomDecodes, decode_custom, decoded_of
from services.codecs.flattening import NORMALIZED_UNITS, flatten_points
from services.codecs.javascript import (
    CodecFailure,
    CodecInvalid,
    CodecLimits,
    DownlinkOutput,
    JsCodec,
    UplinkInput,
    UplinkOutput,
    compile_codec,
)
from services.codecs.model_store import DeviceModel, ModelExists, ModelInUse
from services.codecs.registry import CODECS, decode_uplink

__all__ = [
    "CODECS",
    "NORMALIZED_UNITS",
    "Codec",
    "CodecCache",
    "CodecFailure",
    "CodecInvalid",
    "CodecLimits",
    "CustomDecodes",
    "DecodeError",
    "Decoded",
    "DeviceModel",
    "DownlinkOutput",
    "JsCodec",
    "ModelExists",
    "ModelInUse",
    "UplinkInput",
    "UplinkOutput",
    "compile_codec",
    "decode_custom",
    "decode_uplink",
    "decoded_of",
    "flatten_points",
    "model_store",
    "payload_bytes",
]
