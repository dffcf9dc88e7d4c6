"""The Orbit downlink frame: ``A0|k`` ``seq:u8`` then k x (``param:u8``, ``value:2 bytes``),
zero-padded to exactly 8 bytes (``shared/specs/orbit-protocol.md``, "Downlink frame").
"""

from __future__ import annotations

from collections.abc import Sequence

from services.orbit.params import PARAMS_BY_ID, decode_value, encode_value, get_param

__all__ = ["DOWNLINK_SIZE", "MAX_UPDATES_PER_FRAME", "decode_downlink", "encode_downlink"]

DOWNLINK_SIZE = 8
#: What fits in 8 bytes after the 2-byte header; models allow at most 2 (``orbit-lite`` 1).
MAX_UPDATES_PER_FRAME = 2
_HEADER = 0xA0


def encode_downlink(seq: int, updates: Sequence[tuple[str, int]]) -> bytes:
    """The 8-byte frame carrying ``updates`` ((param name, raw value), in frame order)."""
    if not 1 <= len(updates) <= MAX_UPDATES_PER_FRAME:
        count = len(updates)
        raise ValueError(f"a downlink carries 1..{MAX_UPDATES_PER_FRAME} updates, not {count}")
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"seq {seq} does not fit one byte")
    body = b"".join(bytes([get_param(name).id]) + encode_value(name, raw) for name, raw in updates)
    return (bytes([_HEADER | len(updates), seq]) + body).ljust(DOWNLINK_SIZE, b"\x00")


def decode_downlink(frame: bytes) -> tuple[int, tuple[tuple[str, int], ...]]:
    """The seq and (param name, raw value) updates of an 8-byte downlink frame."""
    if len(frame) != DOWNLINK_SIZE or frame[0] & 0xF0 != _HEADER:
        raise ValueError(f"not an Orbit downlink frame: {frame.hex()}")
    count = frame[0] & 0x0F
    if not 1 <= count <= MAX_UPDATES_PER_FRAME:
        raise ValueError(f"downlink frame announces {count} updates")
    updates = []
    for i in range(count):
        record = frame[2 + 3 * i : 5 + 3 * i]
        param = PARAMS_BY_ID.get(record[0])
        if param is None:
            raise ValueError(f"unknown parameter id 0x{record[0]:02x}")
        updates.append((param.name, decode_value(param, record[1:])))
    return frame[1], tuple(updates)
