"""Orbit device management: the parameter table, the pending-update queue, downlink planning.

The rules are pure functions over frozen dataclasses (``params``, ``queue``, ``planning``,
``state``, ``frames``, ``ack_frame``); their PostgreSQL persistence is ``store`` (its SQL in
``_rows``), and ``changes`` adds the device events of each change to the outbox. The pure
``queue.apply_ack`` is exported as ``apply_ack``; the stored one is ``changes.apply_ack``.
"""

from services.orbit import changes, store
from services.orbit.ack_frame import FRAME_PARAM_ACK, InvalidFrame, count_records, read_param_ack
from services.orbit.changes import MAX_SIGFOX_SEQ, Ack, note_uplinks, orbit_uplink, outcome_events
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
from services.orbit.store import Conn, UnknownDevice, orbit_view
from services.orbit.view import render_view

__all__ = [
    "Ack",
    "Conn",
    "DeviceConfig",
    "Downlink",
    "FACTORY_DEFAULTS",
    "FRAME_PARAM_ACK",
    "InvalidFrame",
    "InvalidParam",
    "MAX_SIGFOX_SEQ",
    "MODELS",
    "Model",
    "Outcome",
    "PARAMS",
    "PARAMS_BY_ID",
    "Param",
    "PendingUpdate",
    "UnknownDevice",
    "apply_ack",
    "changes",
    "count_records",
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
    "note_uplinks",
    "orbit_uplink",
    "orbit_view",
    "outcome_events",
    "plan_downlink",
    "read_param_ack",
    "register_updates",
    "render_view",
    "store",
    "to_raw",
    "validate_updates",
]
