"""First-start set-up of an installation: the ``admin`` integrator, its key, the callback token.

The key is stored hashed in the database like every key; the embedded mode also keeps it in
clear in ``data_dir/admin.key`` (mode 0600) so that every later start prints the same key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

from services.accounts.keys import create_user, generate_key, hash_key, store_key
from services.accounts.scopes import expand_scopes

Row = dict[str, Any]


def _read_secret(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")


def callback_token(data_dir: Path) -> str:
    """The embedded installation's callback token, generated on first start."""
    path = data_dir / "callback.token"
    token = _read_secret(path)
    if not token:
        token = secrets.token_urlsafe(24)
        _write_secret(path, token)
    return token


async def ensure_admin_key(conn: AsyncConnection[Row], data_dir: Path) -> str:
    """The ``admin`` integrator's key with the ``admin`` preset: created once, then reused."""
    path = data_dir / "admin.key"
    key = _read_secret(path)
    async with conn.transaction():
        cur = await conn.execute("SELECT id FROM users WHERE username = 'admin'")
        row = await cur.fetchone()
        user_id = int(row["id"]) if row else await create_user(conn, "admin", is_integrator=True)
        if key:
            cur = await conn.execute("SELECT 1 FROM api_keys WHERE key_hash = %s", (hash_key(key),))
            if await cur.fetchone() is not None:
                return key
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
    _write_secret(path, key)
    return key
