"""The ``device_places`` table: each device's stays at places, past and present, so that a
reading can be attributed to where its device was at that time.

A stay runs from ``since`` until ``until`` (None: the device is still there); a device has at
most one open stay, and its stays never overlap. A device's history starts at its registration:
a device deleted and registered again (perhaps by another account) starts a new one, while the
old stays stay with their places. Deleting a device closes its open stay (a trigger of
migration 0011, in the deleting transaction). Times are Unix seconds at this boundary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, errors

from services.devices import HOLD_BY_ID

Row = dict[str, Any]

#: One row when a device is at the place ``%(place)s`` now: for a statement on ``places``.
OPEN_STAY_AT = "SELECT 1 FROM device_places WHERE place_id = %(place)s AND until IS NULL"


class InvalidSince(ValueError):
    """A move dated in the future, before the device's registration, or before the start of
    its latest stay (stays never overlap): HTTP 422."""


class DeviceGone(LookupError):
    """The device was deleted meanwhile."""


class MovedMeanwhile(RuntimeError):
    """Another move of the same device won the race: HTTP 409, try again."""


@dataclass(frozen=True, slots=True)
class Stay:
    device: str
    place_id: int
    since: float
    until: float | None


def _stay(row: Row) -> Stay:
    until = row["until"]
    return Stay(
        row["device"],
        row["place_id"],
        row["since"].timestamp(),
        None if until is None else until.timestamp(),
    )


async def history(conn: AsyncConnection[Row], device: str, *, registered: float) -> list[Stay]:
    """The device's stays since its registration (``registered``, Unix time), newest first."""
    cur = await conn.execute(
        "SELECT device, place_id, since, until FROM device_places"
        " WHERE device = %s AND since >= %s ORDER BY since DESC",
        (device, datetime.fromtimestamp(registered, UTC)),
    )
    return [_stay(row) for row in await cur.fetchall()]


async def move(
    conn: AsyncConnection[Row],
    device: str,
    place_id: int | None,
    *,
    since: float,
    registered: float,
    now: float,
) -> None:
    """Record that the device is at ``place_id`` (None: at no place) from ``since`` on.

    The open stay, if any, ends at ``since``; at the same place nothing changes, and a move
    dated exactly at the open stay's start replaces that stay (a correction). Raises
    :class:`InvalidSince`, :class:`DeviceGone` or :class:`MovedMeanwhile`.
    """
    if since > now:
        raise InvalidSince("a move cannot be dated in the future")
    if since < registered:
        raise InvalidSince("a move cannot be dated before the device's registration")
    at = datetime.fromtimestamp(since, UTC)
    try:
        async with conn.transaction():
            if await (await conn.execute(HOLD_BY_ID, {"device": device})).fetchone() is None:
                raise DeviceGone(device)
            cur = await conn.execute(
                "SELECT id, place_id, since, until FROM device_places"
                " WHERE device = %s AND since >= %s ORDER BY since DESC LIMIT 1 FOR UPDATE",
                (device, datetime.fromtimestamp(registered, UTC)),
            )
            last = await cur.fetchone()
            if last is not None and last["until"] is None:
                if last["place_id"] == place_id:
                    return
                if at < last["since"]:
                    raise InvalidSince("the device's current stay started later")
                if at == last["since"]:
                    await conn.execute("DELETE FROM device_places WHERE id = %s", (last["id"],))
                else:
                    await conn.execute(
                        "UPDATE device_places SET until = %s WHERE id = %s", (at, last["id"])
                    )
            elif last is not None and at < last["until"]:
                raise InvalidSince("the device's latest stay ended later")
            if place_id is not None:
                await conn.execute(
                    "INSERT INTO device_places (device, place_id, since) VALUES (%s, %s, %s)",
                    (device, place_id, at),
                )
    except errors.UniqueViolation as exc:
        raise MovedMeanwhile(device) from exc


async def stays_at(conn: AsyncConnection[Row], place_id: int) -> list[Stay]:
    """Every stay at the place, deleted devices' included, newest first."""
    cur = await conn.execute(
        "SELECT device, place_id, since, until FROM device_places"
        " WHERE place_id = %s ORDER BY since DESC, device",
        (place_id,),
    )
    return [_stay(row) for row in await cur.fetchall()]


async def present(conn: AsyncConnection[Row], place_ids: Sequence[int]) -> dict[int, list[str]]:
    """The devices at each place now (by id), in one statement, whoever may see them."""
    found: dict[int, list[str]] = {place_id: [] for place_id in place_ids}
    if not found:
        return found
    cur = await conn.execute(
        "SELECT place_id, device FROM device_places WHERE place_id = ANY(%s) AND until IS NULL"
        " ORDER BY place_id, device",
        (list(found),),
    )
    for row in await cur.fetchall():
        found[row["place_id"]].append(row["device"])
    return found
