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

from services.accounts import admin_key

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
    key, new = await admin_key(conn, _read_secret(path))
    if new:
        _write_secret(path, key)
    return key
