"""The ``fleets`` and ``fleet_devices`` tables: an account's named groups of devices and their
members. A device may belong to several fleets; deleting it removes it from them (a cascade of
the database). Who may see which member is :mod:`services.fleets.visible`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, errors

from services.fleets.stays import DeviceGone

Row = dict[str, Any]


class FleetExists(ValueError):
    """The account already has a fleet of that name: HTTP 409."""


@dataclass(frozen=True, slots=True)
class Fleet:
    id: int
    account_id: int
    name: str
    created: int


_SELECT = "SELECT id, account_id, name, created FROM fleets"


def _fleet(row: Row) -> Fleet:
    return Fleet(row["id"], row["account_id"], row["name"], int(row["created"].timestamp()))


async def create_fleet(conn: AsyncConnection[Row], *, account_id: int, name: str) -> Fleet:
    """A new, empty fleet of the account; raises :class:`FleetExists`."""
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO fleets (account_id, name) VALUES (%s, %s)"
                " RETURNING id, account_id, name, created",
                (account_id, name),
            )
            row = await cur.fetchone()
    except errors.UniqueViolation as exc:
        raise FleetExists(f"a fleet named {name!r} exists") from exc
    assert row is not None
    return _fleet(row)


async def get_fleet(conn: AsyncConnection[Row], fleet_id: int, account_id: int) -> Fleet | None:
    """The fleet if it is the account's (else None: nothing of another account is revealed)."""
    cur = await conn.execute(_SELECT + " WHERE id = %s AND account_id = %s", (fleet_id, account_id))
    row = await cur.fetchone()
    return None if row is None else _fleet(row)


async def list_fleets(conn: AsyncConnection[Row], account_id: int) -> list[Fleet]:
    """The account's fleets, by name."""
    cur = await conn.execute(_SELECT + " WHERE account_id = %s ORDER BY name, id", (account_id,))
    return [_fleet(row) for row in await cur.fetchall()]


async def rename_fleet(conn: AsyncConnection[Row], fleet_id: int, name: str) -> Fleet | None:
    """Rename a fleet (None when it is gone); raises :class:`FleetExists`."""
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE fleets SET name = %s WHERE id = %s RETURNING id, account_id, name, created",
                (name, fleet_id),
            )
            row = await cur.fetchone()
    except errors.UniqueViolation as exc:
        raise FleetExists(f"a fleet named {name!r} exists") from exc
    return None if row is None else _fleet(row)


async def delete_fleet(conn: AsyncConnection[Row], fleet_id: int) -> bool:
    """Delete a fleet and its memberships (never its devices); False when it was gone."""
    cur = await conn.execute("DELETE FROM fleets WHERE id = %s RETURNING id", (fleet_id,))
    return await cur.fetchone() is not None


async def add_device(conn: AsyncConnection[Row], fleet_id: int, device: str) -> None:
    """Make the device a member (nothing changes if it is one); raises :class:`DeviceGone`
    for a device deleted meanwhile."""
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO fleet_devices (fleet_id, device) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (fleet_id, device),
            )
    except errors.ForeignKeyViolation as exc:
        raise DeviceGone(device) from exc


async def remove_device(conn: AsyncConnection[Row], fleet_id: int, device: str) -> bool:
    """Take the device out of the fleet; False when it was not a member."""
    cur = await conn.execute(
        "DELETE FROM fleet_devices WHERE fleet_id = %s AND device = %s RETURNING device",
        (fleet_id, device),
    )
    return await cur.fetchone() is not None


async def members(conn: AsyncConnection[Row], fleet_ids: Sequence[int]) -> dict[int, list[str]]:
    """The device ids of each fleet (by id), in one statement, whoever may see them."""
    found: dict[int, list[str]] = {fleet_id: [] for fleet_id in fleet_ids}
    if not found:
        return found
    cur = await conn.execute(
        "SELECT fleet_id, device FROM fleet_devices WHERE fleet_id = ANY(%s)"
        " ORDER BY fleet_id, device",
        (list(found),),
    )
    for row in await cur.fetchall():
        found[row["fleet_id"]].append(row["device"])
    return found
