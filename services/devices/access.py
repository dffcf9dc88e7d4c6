"""Who may see a device and to whom it may be given: a user sees its own devices, an integrator
those of its whole account, and an integrator gives devices to itself or its users only."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from services.accounts import USERNAME, Principal
from services.devices.store import get_device_row

Row = dict[str, Any]


class InvalidOwner(ValueError):
    """An owner the caller may not give a device to (unknown, or outside its account)."""


def visible_to(row: Row, principal: Principal) -> bool:
    """A normal user sees its own devices; an integrator sees those of its whole account."""
    if principal.is_integrator:
        return bool(row["account_id"] == principal.account_id)
    return bool(row["owner_id"] == principal.user_id)


async def visible_device(
    conn: AsyncConnection[Row], device_id: str, principal: Principal
) -> Row | None:
    """The device if this principal may see it (else None: 404, nothing is revealed)."""
    row = await get_device_row(conn, device_id)
    if row is None or not visible_to(row, principal):
        return None
    return row


async def resolve_owner(conn: AsyncConnection[Row], principal: Principal, owner: str | None) -> int:
    """The owner's user id: the caller, or (for an integrator) itself or one of its users.

    Raises :class:`InvalidOwner`; an owner outside the caller's account is reported exactly as
    an unknown one (nothing of another hierarchy is revealed).
    """
    if owner is None or owner == principal.username:
        return principal.user_id
    if principal.is_integrator and USERNAME.match(owner):
        cur = await conn.execute(
            "SELECT id FROM users WHERE username = %s AND parent_id = %s",
            (owner, principal.user_id),
        )
        row = await cur.fetchone()
        if row is not None:
            return int(row["id"])
    raise InvalidOwner(f"unknown owner {owner!r}")
