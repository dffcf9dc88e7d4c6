"""The ``devices`` table: every statement on it (register, read, list, change, delete, count,
the uplinks' ``last_seen`` and status), and the fragments through which another table's
statement reads it in the same round trip. Nothing else names the table's columns."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection, errors, sql

from services.accounts import Principal
from services.devices.ids import plausible_id, validate_new_device
from services.platform import json_rows, timescale_aggregates

Row = dict[str, Any]
log = logging.getLogger(__name__)

# --- Fragments for the statements of other tables --------------------------------------------

#: Each device's id and current owner (``id``, ``owner_id``): a subquery to join, for a table
#: whose rows belong to a device's owner (``JOIN ({CURRENT_OWNERS}) d ON d.id = ...``).
CURRENT_OWNERS = "SELECT id, owner_id FROM devices"

#: Whether the device ``%(device)s`` is active: one row, or none for an unknown device (as a
#: scalar subquery, NULL). For a statement that checks the device in its own round trip.
ACTIVE_BY_ID = "SELECT active FROM devices WHERE id = %(device)s"

#: Keeps the device ``%(device)s`` from being deleted until the transaction ends (one row, or
#: none for an unknown device): for a table that writes about a device without a foreign key to
#: it (a deletion waits, then sees what was written).
HOLD_BY_ID = "SELECT id FROM devices WHERE id = %(device)s FOR KEY SHARE"

#: Each device's id, model and account (``id``, ``model``, ``account_id``: the owner's
#: integrator, or the owner): a subquery to join, for a table of an account's objects that
#: devices name (its device models).
DEVICE_ACCOUNTS = (
    "SELECT d.id, d.model, COALESCE(u.parent_id, u.id) AS account_id"
    " FROM devices d JOIN users u ON u.id = d.owner_id"
)


class DeviceInUse(ValueError):
    """The device is still referred to by data that prevents its deletion."""


# --- The API's reads and changes --------------------------------------------------------------

_SELECT = """
SELECT d.id, d.name, d.model, d.network, d.owner_id, u.username AS owner, d.active, d.created,
       d.last_seen, COALESCE(u.parent_id, u.id) AS account_id
FROM devices d JOIN users u ON u.id = d.owner_id
"""


async def create_device(
    conn: AsyncConnection[Row],
    *,
    device_id: str,
    model: str,
    name: str,
    owner_id: int,
    network: str | None = None,
) -> Row | None:
    """Register a device; None when the id is taken. ``network`` is that of an account's own
    model (a built-in model has its own)."""
    canonical, network = validate_new_device(device_id, model, network)
    cur = await conn.execute(
        "INSERT INTO devices (id, name, model, network, owner_id) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",  # the id, in any case, is taken
        (canonical, name, model, network, owner_id),
    )
    if await cur.fetchone() is None:
        return None
    return await get_device_row(conn, canonical)


async def get_device_row(conn: AsyncConnection[Row], device_id: str) -> Row | None:
    """A device with its owner's name and account, whoever may see it."""
    if not plausible_id(device_id):
        return None
    # Case-insensitive (api-contract.md); unique by the index devices_id_ci, which this uses.
    cur = await conn.execute(_SELECT + " WHERE upper(d.id) = upper(%s)", (device_id,))
    return await cur.fetchone()


async def list_devices(conn: AsyncConnection[Row], principal: Principal) -> list[Row]:
    """Every device this principal may see, by id."""
    if principal.is_integrator:
        cur = await conn.execute(
            _SELECT + " WHERE COALESCE(u.parent_id, u.id) = %s ORDER BY d.id",
            (principal.account_id,),
        )
    else:
        cur = await conn.execute(
            _SELECT + " WHERE d.owner_id = %s ORDER BY d.id", (principal.user_id,)
        )
    return await cur.fetchall()


async def update_device(
    conn: AsyncConnection[Row],
    device_id: str,
    *,
    name: str | None = None,
    active: bool | None = None,
    owner_id: int | None = None,
) -> Row | None:
    """Change what is given (None keeps the value); returns the device as it now is."""
    await conn.execute(
        "UPDATE devices SET name = COALESCE(%s, name), active = COALESCE(%s, active),"
        " owner_id = COALESCE(%s, owner_id) WHERE id = %s",
        (name, active, owner_id, device_id),
    )
    return await get_device_row(conn, device_id)


#: What a device leaves without a foreign key to it: deleted with it, or whoever registers the
#: same id next (another account, perhaps) would read the old device's data.
_DEVICE_DATA = ("points", "device_latest", "device_state", "device_events")


async def delete_device(conn: AsyncConnection[Row], device_id: str) -> None:
    """Delete a device and its data (points, latest values, state, events) in one transaction;
    raises :class:`DeviceInUse` when other data still refers to it.

    On TimescaleDB the continuous aggregates over the deleted points' time span are then
    refreshed (on ``conn``, autocommit, outside the transaction): until that succeeds their
    materialised buckets would still hold the old device's figures. A failure is logged and the
    refresh policies catch up within their window."""
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM devices WHERE id = %s", (device_id,))
            cur = await conn.execute(
                "SELECT min(time) AS start, max(time) AS end FROM points WHERE device = %s",
                (device_id,),
            )
            span = await cur.fetchone()
            for table in _DEVICE_DATA:
                await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE device = %s").format(sql.Identifier(table)),
                    (device_id,),
                )
    except errors.ForeignKeyViolation as exc:
        raise DeviceInUse("other data still refers to this device") from exc
    if span is None or span["start"] is None:
        return
    try:
        await timescale_aggregates.refresh_aggregates(conn, span["start"], span["end"])
    except Exception as exc:  # the device is deleted all the same
        log.warning("aggregates of deleted device %s not refreshed: %r", device_id, exc)


async def count_owned(conn: AsyncConnection[Row], owner_id: int) -> int:
    """How many devices the user ``owner_id`` owns."""
    cur = await conn.execute("SELECT count(*) AS n FROM devices WHERE owner_id = %s", (owner_id,))
    row = await cur.fetchone()
    return 0 if row is None else int(row["n"])


# --- The hot paths ----------------------------------------------------------------------------


async def select_infos(conn: AsyncConnection[Row], device_ids: Sequence[str]) -> list[Row]:
    """``id``, ``model``, ``owner_id`` and ``active`` of those of ``device_ids`` that exist."""
    cur = await conn.execute(
        "SELECT id, model, owner_id, active FROM devices WHERE id = ANY(%s)", (device_ids,)
    )
    return await cur.fetchall()


async def note_last_seen(conn: AsyncConnection[Row], seen: Mapping[str, float]) -> None:
    """Move each device's ``last_seen`` forward to its time in ``seen`` (never back), in one
    statement; nothing to do for an empty mapping."""
    if not seen:
        return
    await conn.execute(
        "UPDATE devices d SET last_seen = GREATEST(d.last_seen, to_timestamp((s.r->>1)::float8))"
        " FROM json_array_elements(%s::json) AS s(r) WHERE d.id = s.r->>0",
        (json_rows(list(seen.items())),),
    )


async def set_status(
    conn: AsyncConnection[Row], device: str, *, battery_mv: int | None, firmware: str | None
) -> None:
    """Keep the battery voltage and firmware version of the device's last status report."""
    await conn.execute(
        "UPDATE devices SET battery_mv = %s, firmware = %s WHERE id = %s",
        (battery_mv, firmware, device),
    )
