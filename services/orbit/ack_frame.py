"""The Orbit parameter-ack uplink frame (0x10): ``seq:u8`` then k x (``param:u8``,
``value:2 bytes``), k = 1..3 (``orbit-protocol.md``, "Uplink frames"). Read by the codec
(:mod:`services.codecs.orbit_uplink`) and by the downlink answer, which applies the ack a
downlink request carries before it answers."""

from __future__ import annotations

from typing import Any

from services.orbit.params import PARAMS_BY_ID, decode_value, from_raw

FRAME_PARAM_ACK = 0x10


class InvalidFrame(ValueError):
    """An Orbit frame of the wrong length or shape; the message says why."""


def count_records(frame: bytes, *, record_size: int, max_count: int, what: str) -> int:
    """The number of records after the 2-byte header, checking length and range."""
    body = len(frame) - 2
    if body < 0 or body % record_size:
        raise InvalidFrame(
            f"frame 0x{frame[0]:02x}: wrong length {len(frame)} bytes "
            f"(expected 2 + {record_size} x {what})"
        )
    count = body // record_size
    if not 1 <= count <= max_count:
        raise InvalidFrame(f"frame 0x{frame[0]:02x}: {count} {what}, expected 1..{max_count}")
    return count


def read_param_ack(frame: bytes) -> dict[str, Any]:
    """The ``data`` of a 0x10 frame's ``param_ack`` event: ``seq`` and ``params``
    (``[{"param", "id", "raw", "value"}]``). A parameter id the protocol does not define is
    listed under ``ignored`` (``{"id", "raw_hex"}``) and the others are read all the same:
    refusing the whole frame would lose the acks of the known ones (their updates would time out
    and be sent again while the device runs them). Raises :class:`InvalidFrame`."""
    if not frame or frame[0] != FRAME_PARAM_ACK:
        raise InvalidFrame("not a parameter ack (frame 0x10)")
    count = count_records(frame, record_size=3, max_count=3, what="parameters")
    params: list[dict[str, Any]] = []
    ignored: list[dict[str, Any]] = []
    for i in range(count):
        param_id, value_bytes = frame[2 + 3 * i], frame[3 + 3 * i : 5 + 3 * i]
        param = PARAMS_BY_ID.get(param_id)
        if param is None:
            ignored.append({"id": param_id, "raw_hex": value_bytes.hex()})
            continue
        raw = decode_value(param, value_bytes)
        value = from_raw(param.name, raw)
        params.append({"param": param.name, "id": param_id, "raw": raw, "value": value})
    data: dict[str, Any] = {"seq": frame[1], "params": params}
    if ignored:
        data["ignored"] = ignored
    return data
