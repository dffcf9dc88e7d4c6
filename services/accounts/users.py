"""Users, integrators and accounts.

An integrator is a parent account of normal users (one level: an integrator's user cannot be an
integrator). An *account* is an integrator with all its users, or a standalone user: rate limits
are per account and stored on the account's own row (``users.rate_per_minute/rate_per_day``).
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncConnection, errors

from services.accounts.keys import Principal, create_user

Row = dict[str, Any]

#: Usernames travel in URL paths (``/v1/users/{username}``): a conservative alphabet.
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidUser(ValueError):
    """A user that cannot be created as asked (the message says why): HTTP 422."""


class UserExists(ValueError):
    """The username is taken: HTTP 409."""


class UserHasDevices(ValueError):
    """The user still owns devices (move or delete them first): HTTP 409."""


class UnknownUser(LookupError):
    """No such user (or not one the caller may see)."""


_SELECT = """
SELECT u.id, u.username, u.is_integrator, u.parent_id, p.username AS parent, u.created,
       u.rate_per_minute, u.rate_per_day
FROM users u LEFT JOIN users p ON p.id = u.parent_id
"""


def check_username(username: str) -> str:
    """The username if valid (1 to 64 of letters, digits, ``_ . -``, starting alphanumeric)."""
    if not USERNAME.match(username):
        raise InvalidUser(
            "a username is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter"
            " or digit"
        )
    return username


def user_body(row: Row) -> dict[str, Any]:
    """The API body of a user."""
    return {
        "username": row["username"],
        "integrator": row["is_integrator"],
        "parent": row["parent"],
        "created": int(row["created"].timestamp()),
    }


async def get_user(conn: AsyncConnection[Row], username: str) -> Row | None:
    """A user by name, or None."""
    if not USERNAME.match(username):
        return None
    cur = await conn.execute(_SELECT + " WHERE u.username = %s", (username,))
    return await cur.fetchone()


async def add_user(
    conn: AsyncConnection[Row],
    *,
    username: str,
    is_integrator: bool = False,
    parent: str | None = None,
) -> Row:
    """Create a user (standalone, integrator, or an integrator's user when ``parent`` is set)."""
    check_username(username)
    parent_id: int | None = None
    if parent is not None:
        if is_integrator:
            raise InvalidUser("an integrator cannot have a parent")
        parent_row = await get_user(conn, parent)
        if parent_row is None or not parent_row["is_integrator"]:
            raise InvalidUser(f"{parent!r} is not an integrator")
        parent_id = int(parent_row["id"])
    try:
        async with conn.transaction():
            await create_user(conn, username, is_integrator=is_integrator, parent_id=parent_id)
    except errors.UniqueViolation as exc:
        raise UserExists(f"the username {username!r} is taken") from exc
    row = await get_user(conn, username)
    assert row is not None
    return row


async def list_users(conn: AsyncConnection[Row], *, parent_id: int | None = None) -> list[Row]:
    """An integrator's users, or (``parent_id`` None) every user; by username."""
    if parent_id is None:
        cur = await conn.execute(_SELECT + " ORDER BY u.username")
    else:
        cur = await conn.execute(
            _SELECT + " WHERE u.parent_id = %s ORDER BY u.username", (parent_id,)
        )
    return await cur.fetchall()


async def users_of(conn: AsyncConnection[Row], principal: Principal, username: str) -> Row | None:
    """One of the principal's users (an integrator's child), or None: nothing else is visible."""
    if not principal.is_integrator:
        return None
    row = await get_user(conn, username)
    if row is None or row["parent_id"] != principal.user_id:
        return None
    return row


async def delete_user(conn: AsyncConnection[Row], user_id: int, *, devices_owned: int) -> None:
    """Delete a user with its keys and usage; refused while it owns devices.

    ``devices_owned`` is the caller's count of them (``services.devices.store.count_owned``:
    the devices package sits above this one, which does not read its table).
    """
    if devices_owned:
        raise UserHasDevices(
            f"the user still owns {devices_owned} device(s); move or delete them first"
        )
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    except errors.ForeignKeyViolation as exc:
        # A device registered meanwhile, or another table of the pipeline still refers to it.
        raise UserHasDevices("the user is still referred to (devices or other data)") from exc


async def account_user_ids(conn: AsyncConnection[Row], principal: Principal) -> list[int]:
    """The principal itself, and for an integrator each of its users."""
    if not principal.is_integrator:
        return [principal.user_id]
    cur = await conn.execute(
        "SELECT id FROM users WHERE id = %s OR parent_id = %s ORDER BY id",
        (principal.user_id, principal.user_id),
    )
    return [int(row["id"]) for row in await cur.fetchall()]


async def set_limits(
    conn: AsyncConnection[Row],
    *,
    username: str,
    per_minute: int | None,
    per_day: int | None,
) -> Row:
    """Set an account's rate limits (None keeps the current value).

    Raises :class:`UnknownUser`, or :class:`InvalidUser` for an integrator's user (limits are
    per account: they are set on the integrator).
    """
    row = await get_user(conn, username)
    if row is None:
        raise UnknownUser(f"no user {username!r}")
    if row["parent_id"] is not None:
        raise InvalidUser(
            f"{username!r} belongs to the account of {row['parent']!r}: set the limits there"
        )
    for value in (per_minute, per_day):
        if value is not None and value < 1:
            raise InvalidUser("a limit is at least 1")
    await conn.execute(
        "UPDATE users SET rate_per_minute = COALESCE(%s, rate_per_minute),"
        " rate_per_day = COALESCE(%s, rate_per_day) WHERE id = %s",
        (per_minute, per_day, row["id"]),
    )
    updated = await get_user(conn, username)
    assert updated is not None
    return updated
