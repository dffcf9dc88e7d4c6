"""Who sees what of fleets and places. Fleets and places are the account's: every user of the
account sees them, and only the account's own user (the integrator, or the standalone user)
creates, changes and deletes them. Inside them a user sees only the devices it may see
(:mod:`services.devices`' rule, applied here through its own listing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from psycopg import AsyncConnection

from services.accounts import Principal
from services.devices import store as devices_store
from services.fleets.stays import Stay

Row = dict[str, Any]
K = TypeVar("K")


def manages_account(principal: Principal) -> bool:
    """Whether the principal is its account's own user (an integrator, a standalone user)."""
    return principal.user_id == principal.account_id


async def visible_devices(conn: AsyncConnection[Row], principal: Principal) -> dict[str, Row]:
    """Every device the principal may see, by id (one statement)."""
    return {row["id"]: row for row in await devices_store.list_devices(conn, principal)}


def only_visible(
    devices: Mapping[K, Sequence[str]], visible: Mapping[str, Row]
) -> dict[K, list[Row]]:
    """Each key's devices that are in ``visible``, as their rows, in the given order."""
    return {
        key: [visible[device] for device in ids if device in visible]
        for key, ids in devices.items()
    }


def visible_stays(
    stays: Sequence[Stay], principal: Principal, visible: Mapping[str, Row]
) -> list[Stay]:
    """The stays at one of the account's places the principal may see: all of them for the
    account's own user (deleted devices' included: the place's history is the account's),
    else those of the devices it sees now."""
    if manages_account(principal):
        return list(stays)
    return [stay for stay in stays if stay.device in visible]
