"""Orbit device management: the parameter table, the pending-update queue, downlink planning.

Pure functions over frozen dataclasses; the PostgreSQL persistence is ``services.orbit.store``
(imported on its own, so that codecs importing ``services.orbit.params`` stay light).
"""

from services.orbit.frames import decode_downlink, encode_downlink
from services.orbit.params import (
    FACTORY_DEFAULTS,
    MODELS,
    PARAMS,
    PARAMS_BY_ID,
    InvalidParam,
    Model,
    Param,
    decode_value,
    default_active,
    encode_value,
    from_raw,
    to_raw,
)
from services.orbit.planning import downlinks_left_24h, mark_sent, next_seq, plan_downlink
from services.orbit.queue import (
    apply_ack,
    delete_pending,
    note_uplink,
    register_updates,
    validate_updates,
)
from services.orbit.state import DeviceConfig, Downlink, Outcome, PendingUpdate
from services.orbit.view import render_view

__all__ = [
    "FACTORY_DEFAULTS",
    "MODELS",
    "PARAMS",
    "PARAMS_BY_ID",
    "DeviceConfig",
    "Downlink",
    "InvalidParam",
    "Model",
    "Outcome",
    "Param",
    "PendingUpdate",
    "apply_ack",
    "decode_downlink",
    "decode_value",
    "default_active",
    "delete_pending",
    "downlinks_left_24h",
    "encode_downlink",
    "encode_value",
    "from_raw",
    "mark_sent",
    "next_seq",
    "note_uplink",
    "plan_downlink",
    "register_updates",
    "render_view",
    "to_raw",
    "validate_updates",
]
