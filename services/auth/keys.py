"""API key generation and lookup. Keys are shown once; only their SHA-256 is stored.

A key is 64 characters of ``[A-Za-z0-9]`` from :mod:`secrets` (about 381 bits), so a fast hash
is safe: there is nothing to brute-force. Lookup is by the hash (an index probe), which also
makes the comparison independent of how much of the key is right.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]
ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64


def generate_key() -> str:
    """A fresh 64-character key from a CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(KEY_LENGTH))


def hash_key(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def looks_like_key(key: str) -> bool:
    """Cheap shape check before touching the database."""
    return len(key) == KEY_LENGTH and all(ch in ALPHABET for ch in key)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the key's user, its account and scopes."""

    key_id: int
    key_name: str
    user_id: int
    username: str
    is_integrator: bool
    #: The id of the account: the integrator for its users, else the user itself.
    account_id: int
    scopes: frozenset[str]
    expiration: datetime | None
    revoked: bool

    def has(self, scope: str) -> bool:
        return scope in self.scopes


_LOOKUP = """
SELECT k.id AS key_id, k.name AS key_name, k.scopes, k.expiration, k.revoked,
       u.id AS user_id, u.username, u.is_integrator, COALESCE(u.parent_id, u.id) AS account_id
FROM api_keys k JOIN users u ON u.id = k.user_id
WHERE k.key_hash = %s
"""


async def find_principal(conn: AsyncConnection[Row], key: str) -> Principal | None:
    """The principal of a key, or None when no such key exists (expiry is the caller's)."""
    if not looks_like_key(key):
        return None
    cur = await conn.execute(_LOOKUP, (hash_key(key),))
    row = await cur.fetchone()
    if row is None:
        return None
    return Principal(
        key_id=row["key_id"],
        key_name=row["key_name"],
        user_id=row["user_id"],
        username=row["username"],
        is_integrator=row["is_integrator"],
        account_id=row["account_id"],
        scopes=frozenset(row["scopes"]),
        expiration=row["expiration"],
        revoked=row["revoked"],
    )


async def create_user(
    conn: AsyncConnection[Row],
    username: str,
    *,
    is_integrator: bool = False,
    parent_id: int | None = None,
) -> int:
    """Insert a user and return its id."""
    cur = await conn.execute(
        "INSERT INTO users (username, is_integrator, parent_id) VALUES (%s, %s, %s) RETURNING id",
        (username, is_integrator, parent_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def store_key(
    conn: AsyncConnection[Row],
    *,
    user_id: int,
    name: str,
    key: str,
    scopes: tuple[str, ...],
    expiration: datetime | None = None,
) -> int:
    """Store a key's hash and metadata; returns its id."""
    cur = await conn.execute(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, scopes, expiration)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (user_id, name, key[:6], hash_key(key), list(scopes), expiration),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])
