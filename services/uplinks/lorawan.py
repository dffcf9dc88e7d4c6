"""What The Things Stack and ChirpStack share: RFC 3339 times, base64 payloads, DevEUIs."""

from __future__ import annotations

import base64
import binascii
import calendar
import re
from datetime import datetime, timedelta, timezone

#: A DevEUI: 16 hex digits (compared upper-case).
DEV_EUI = re.compile(r"^[0-9A-Fa-f]{16}$")
#: Times outside [1970, 2106) are refused: they would poison storage downstream.
MAX_TIME = 2**32

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,12}))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))$"
)


def parse_rfc3339(value: str) -> float:
    """Unix seconds of an RFC 3339 time, rounded to the millisecond (nanoseconds allowed).

    Raises ValueError for anything else, or a time before 1970 or after 2105.
    """
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {value[:40]!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "").ljust(9, "0")[:9]
    if match.group(8):
        offset = timedelta(0)
    else:
        sign = -1 if match.group(9) == "-" else 1
        offset = sign * timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if abs(offset) >= timedelta(days=1):
            raise ValueError(f"invalid UTC offset in {value[:40]!r}")
    # The datetime constructor checks the calendar (no 31 February, no second 60).
    moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    seconds = calendar.timegm(moment.utctimetuple())
    millis = seconds * 1000 + (int(fraction) + 500_000) // 1_000_000
    if not 0 <= millis < MAX_TIME * 1000:
        raise ValueError(f"time out of range: {value[:40]!r}")
    return millis / 1000


def base64_to_hex(value: str) -> str:
    """The lower-case hex of a standard base64 string; raises ValueError when it is not one."""
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not valid base64") from exc


def best_reception(
    receptions: list[tuple[str | None, float | None, float | None]],
) -> dict[str, object]:
    """``gateway``/``rssi``/``snr`` of the strongest reception (by RSSI), for the envelope meta.

    Both network servers write Protobuf JSON, which leaves out zero values: a reception with an
    RSSI and no SNR had an SNR of 0 dB. One with neither (forwarded without metadata, such as
    TTN's Packet Broker) has unknown values, which stay out of the meta.
    """
    meta: dict[str, object] = {}
    if not receptions:
        return meta
    gateway, rssi, snr = max(receptions, key=lambda r: -1e9 if r[1] is None else r[1])
    if rssi is not None and snr is None:
        snr = 0.0
    for key, value in (("gateway", gateway), ("rssi", rssi), ("snr", snr)):
        if value is not None:
            meta[key] = value
    meta["gateways"] = len(receptions)
    return meta
