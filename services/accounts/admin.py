"""The installation's ``admin`` integrator and its key, created on first start."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from services.accounts.keys import create_user, generate_key, hash_key, store_key
from services.accounts.scopes import expand_scopes

Row = dict[str, Any]


async def admin_key(conn: AsyncConnection[Row], known: str | None) -> tuple[str, bool]:
    """The ``admin`` integrator's key with the ``admin`` preset: ``known`` while it is still
    stored, else a new one replacing the previous ``bootstrap`` key. Returns the key and
    whether it is new (the caller keeps it)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT id FROM users WHERE username = 'admin'")
        row = await cur.fetchone()
        user_id = int(row["id"]) if row else await create_user(conn, "admin", is_integrator=True)
        if known:
            cur = await conn.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = %s", (hash_key(known),)
            )
            if await cur.fetchone() is not None:
                return known, False
        key = generate_key()
        await conn.execute(
            "DELETE FROM api_keys WHERE user_id = %s AND name = 'bootstrap'", (user_id,)
        )
        await store_key(
            conn,
            user_id=user_id,
            name="bootstrap",
            key=key,
            scopes=expand_scopes(["admin"], is_integrator=True),
        )
    return key, True
