"""The ``places`` table: where an account's devices are installed (a site, a building, a cold
room, a vehicle...), with optional coordinates and address. Which device is where, and was,
is :mod:`services.fleets.stays`'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection

from services.fleets.stays import OPEN_STAY_AT

Row = dict[str, Any]

#: The documented place types (docs/api.md). ``type`` is free text: these are what clients
#: should prefer, so that places of several accounts read alike.
PLACE_TYPES: Final = (
    "site",
    "building",
    "floor",
    "room",
    "cold room",
    "warehouse",
    "store",
    "vehicle",
    "trailer",
    "container",
    "outdoor",
    "other",
)


class PlaceInUse(ValueError):
    """Devices are at the place now (move them first): HTTP 409."""


@dataclass(frozen=True, slots=True)
class Place:
    id: int
    account_id: int
    name: str
    type: str
    #: Both or neither (WGS 84 degrees).
    latitude: float | None
    longitude: float | None
    address: str | None
    created: int


_COLUMNS = "id, account_id, name, type, latitude, longitude, address, created"
_INSERT = f"""
INSERT INTO places (account_id, name, type, latitude, longitude, address)
VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}
"""  # noqa: S608 (fixed columns, no input)
_SELECT = f"SELECT {_COLUMNS} FROM places"  # noqa: S608 (fixed columns, no input)
_UPDATE = f"""
UPDATE places SET name = %s, type = %s, latitude = %s, longitude = %s, address = %s
WHERE id = %s RETURNING {_COLUMNS}
"""  # noqa: S608 (fixed columns, no input)
_DELETE_UNUSED = (
    f"DELETE FROM places WHERE id = %(place)s AND NOT EXISTS ({OPEN_STAY_AT})"  # noqa: S608
    " RETURNING id"
)


def _place(row: Row) -> Place:
    return Place(**{**row, "created": int(row["created"].timestamp())})


async def create_place(
    conn: AsyncConnection[Row],
    *,
    account_id: int,
    name: str,
    type: str,  # noqa: A002 - the column's name
    latitude: float | None = None,
    longitude: float | None = None,
    address: str | None = None,
) -> Place:
    """A new place of the account."""
    cur = await conn.execute(_INSERT, (account_id, name, type, latitude, longitude, address))
    row = await cur.fetchone()
    assert row is not None
    return _place(row)


async def get_place(conn: AsyncConnection[Row], place_id: int, account_id: int) -> Place | None:
    """The place if it is the account's (else None: nothing of another account is revealed)."""
    cur = await conn.execute(_SELECT + " WHERE id = %s AND account_id = %s", (place_id, account_id))
    row = await cur.fetchone()
    return None if row is None else _place(row)


async def list_places(conn: AsyncConnection[Row], account_id: int) -> list[Place]:
    """The account's places, by name."""
    cur = await conn.execute(_SELECT + " WHERE account_id = %s ORDER BY name, id", (account_id,))
    return [_place(row) for row in await cur.fetchall()]


async def update_place(conn: AsyncConnection[Row], place: Place) -> Place | None:
    """Write every field of ``place`` but its id, account and creation (None when it is gone)."""
    cur = await conn.execute(
        _UPDATE,
        (place.name, place.type, place.latitude, place.longitude, place.address, place.id),
    )
    row = await cur.fetchone()
    return None if row is None else _place(row)


async def delete_place(conn: AsyncConnection[Row], place_id: int) -> bool:
    """Delete a place and its past stays; False when it was gone. Raises :class:`PlaceInUse`
    while a device is there."""
    cur = await conn.execute(_DELETE_UNUSED, {"place": place_id})
    if await cur.fetchone() is not None:
        return True
    cur = await conn.execute("SELECT 1 FROM places WHERE id = %s", (place_id,))
    if await cur.fetchone() is None:
        return False
    raise PlaceInUse("devices are at this place; move them first")
