"""API key generation, lookup and management. Keys are shown once; only their SHA-256 is stored.

A key is 64 characters of ``[A-Za-z0-9]`` from :mod:`secrets` (about 381 bits), so a fast hash
is safe: there is nothing to brute-force. Lookup is by the hash (an index probe), which also
makes the comparison independent of how much of the key is right: no secret is ever compared
character by character.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, errors

from services.accounts.scopes import allowed_scopes, expand_scopes

Row = dict[str, Any]
ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64
#: Key names travel in URL paths (``/v1/keys/{name}``): a conservative alphabet.
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: A key used this recently needs ``force=true`` to be deleted.
RECENT_USE = timedelta(days=3)


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
    #: The account's own rate limits (None: the deployment's defaults).
    rate_per_minute: int | None = None
    rate_per_day: int | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


#: ``api_key_principal`` (migration 0004) joins the key, its user and the user's account.
_LOOKUP = "SELECT * FROM api_key_principal(%s)"


async def find_principal(conn: AsyncConnection[Row], key: str) -> Principal | None:
    """The principal of a key, or None when no such key exists (expiry is the caller's).

    The scopes are those stored, bounded by what the user may hold (defence in depth).
    """
    if not looks_like_key(key):
        return None
    cur = await conn.execute(_LOOKUP, (hash_key(key),))
    row = await cur.fetchone()
    if row is None:
        return None
    is_integrator = bool(row["is_integrator"])
    return Principal(
        key_id=row["key_id"],
        key_name=row["key_name"],
        user_id=row["user_id"],
        username=row["username"],
        is_integrator=is_integrator,
        account_id=row["account_id"],
        scopes=frozenset(row["scopes"]) & allowed_scopes(is_integrator=is_integrator),
        expiration=row["expiration"],
        revoked=row["revoked"],
        rate_per_minute=row["rate_per_minute"],
        rate_per_day=row["rate_per_day"],
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


# --- Management: create, list, revoke, delete ------------------------------------------------


class InvalidKeyRequest(ValueError):
    """A key that cannot be created as asked (bad name, past expiration): HTTP 422."""


class KeyNameTaken(ValueError):
    """The user already has a key of that name: HTTP 409."""


class ScopeEscalation(PermissionError):
    """A key may not grant scopes it does not hold itself: HTTP 403."""

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing = tuple(missing)
        super().__init__("this key cannot grant scopes it lacks: " + ", ".join(self.missing))


def check_key_name(name: str) -> str:
    """The name if valid (1 to 64 of letters, digits, ``_ . -``, starting alphanumeric)."""
    if not KEY_NAME.match(name):
        raise InvalidKeyRequest(
            "a key name is 1 to 64 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit"
        )
    return name


def key_scopes(
    requested: Iterable[str], *, is_integrator: bool, granter: frozenset[str] | None = None
) -> tuple[str, ...]:
    """Expand presets for the key's user; refuse what the granting key itself lacks.

    Raises :class:`services.accounts.scopes.InvalidScopes` (422) or :class:`ScopeEscalation` (403).
    """
    scopes = expand_scopes(requested, is_integrator=is_integrator)
    if granter is not None:
        missing = [scope for scope in scopes if scope not in granter]
        if missing:
            raise ScopeEscalation(missing)
    return scopes


_KEY_SELECT = """
SELECT k.id, k.user_id, k.name, k.prefix, k.scopes, k.expiration, k.revoked, k.created,
       k.last_used, u.username AS "user"
FROM api_keys k JOIN users u ON u.id = k.user_id
"""


async def issue_key(
    conn: AsyncConnection[Row],
    *,
    user_id: int,
    name: str,
    scopes: tuple[str, ...],
    expiration: datetime | None = None,
) -> tuple[str, Row]:
    """Create a key for a user; returns (the key in clear, its listing row).

    ``scopes`` are already expanded and checked (:func:`key_scopes`). Raises
    :class:`KeyNameTaken` or :class:`InvalidKeyRequest`.
    """
    check_key_name(name)
    if expiration is not None and expiration <= datetime.now(UTC):
        raise InvalidKeyRequest("expiration must be in the future")
    key = generate_key()
    try:
        async with conn.transaction():
            key_id = await store_key(
                conn, user_id=user_id, name=name, key=key, scopes=scopes, expiration=expiration
            )
    except errors.UniqueViolation as exc:
        raise KeyNameTaken(f"a key named {name!r} already exists for this user") from exc
    row = await get_key_by_id(conn, key_id)
    assert row is not None
    return key, row


async def get_key_by_id(conn: AsyncConnection[Row], key_id: int) -> Row | None:
    """One key's listing row."""
    cur = await conn.execute(_KEY_SELECT + " WHERE k.id = %s", (key_id,))
    return await cur.fetchone()


async def get_key(conn: AsyncConnection[Row], *, user_id: int, name: str) -> Row | None:
    """A user's key by name, or None."""
    if not KEY_NAME.match(name):
        return None
    cur = await conn.execute(_KEY_SELECT + " WHERE k.user_id = %s AND k.name = %s", (user_id, name))
    return await cur.fetchone()


async def list_keys(conn: AsyncConnection[Row], user_ids: Sequence[int]) -> list[Row]:
    """The keys of these users, by user then name."""
    cur = await conn.execute(
        _KEY_SELECT + " WHERE k.user_id = ANY(%s) ORDER BY u.username, k.name", (list(user_ids),)
    )
    return await cur.fetchall()


async def revoke_key(conn: AsyncConnection[Row], key_id: int) -> Row | None:
    """Revoke a key (idempotent): every later request with it is refused."""
    await conn.execute("UPDATE api_keys SET revoked = true WHERE id = %s", (key_id,))
    return await get_key_by_id(conn, key_id)


async def delete_key(conn: AsyncConnection[Row], key_id: int) -> None:
    """Delete a key."""
    await conn.execute("DELETE FROM api_keys WHERE id = %s", (key_id,))


def last_use(stored: datetime | None, pending: datetime | None) -> datetime | None:
    """The later of the stored ``last_used`` and one noted in memory but not yet written."""
    if pending is not None and (stored is None or pending > stored):
        return pending
    return stored


def recently_used(last_used: datetime | None, now: datetime | None = None) -> bool:
    """True when the key was used within :data:`RECENT_USE`."""
    if last_used is None:
        return False
    return last_used > (now or datetime.now(UTC)) - RECENT_USE


def _unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def key_body(row: Row, *, last_used: datetime | None = None) -> dict[str, Any]:
    """The listing of a key (never the key itself); ``last_used``: a time not yet written."""
    return {
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": list(row["scopes"]),
        "expiration": _unix(row["expiration"]),
        "user": row["user"],
        "revoked": row["revoked"],
        "created": _unix(row["created"]),
        "last_used": _unix(last_use(row["last_used"], last_used)),
    }
