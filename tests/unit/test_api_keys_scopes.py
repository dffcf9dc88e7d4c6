"""Keys and scopes: generation, hashing, lookup by hash, presets, escalation, last_used."""

from __future__ import annotations

import hashlib
import string
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.accounts import keys
from services.accounts.last_used import LastUsed
from services.accounts.scopes import SCOPES, InvalidScopes, expand_scopes


def test_keys_are_64_alphanumerics_from_a_csprng() -> None:
    generated = {keys.generate_key() for _ in range(200)}
    assert len(generated) == 200
    alphabet = set(string.ascii_letters + string.digits)
    for key in generated:
        assert len(key) == 64
        assert set(key) <= alphabet
    # Every character class shows up: not a hex or lower-case-only key.
    seen = set("".join(generated))
    assert seen & set(string.ascii_uppercase)
    assert seen & set(string.ascii_lowercase)
    assert seen & set(string.digits)


def test_stored_form_is_the_sha256() -> None:
    key = keys.generate_key()
    assert keys.hash_key(key) == hashlib.sha256(key.encode()).digest()
    assert keys.looks_like_key(key)
    assert not keys.looks_like_key(key[:-1])
    assert not keys.looks_like_key(key[:-1] + "-")
    assert not keys.looks_like_key(key[:-1] + "é")


class _RecordingConn:
    """Records the statements a lookup sends; answers no row."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def execute(self, query: str, params: Any = None) -> _RecordingConn:
        self.sent.append((query, params))
        return self

    async def fetchone(self) -> None:
        return None


async def test_lookup_is_by_hash_never_by_the_key() -> None:
    conn = _RecordingConn()
    key = keys.generate_key()
    assert await keys.find_principal(conn, key) is None  # type: ignore[arg-type]
    [(query, params)] = conn.sent
    assert query == "SELECT * FROM api_key_principal(%s)"
    assert params == (keys.hash_key(key),)
    assert key not in repr(conn.sent)
    # A malformed key costs no query at all.
    assert await keys.find_principal(conn, "short") is None  # type: ignore[arg-type]
    assert len(conn.sent) == 1


def test_presets() -> None:
    assert expand_scopes(["read-only"], is_integrator=False) == ("readdata", "readdev", "readorbit")
    assert expand_scopes(["read-write"], is_integrator=False) == (
        "readdata",
        "readdev",
        "writedev",
        "readorbit",
        "writeorbit",
        "sendcmd",
    )
    assert expand_scopes(["admin"], is_integrator=True) == SCOPES
    assert "manageusers" not in expand_scopes(["admin"], is_integrator=False)
    assert expand_scopes(["readusage", "read-only"], is_integrator=False) == (
        "readdata",
        "readdev",
        "readorbit",
        "readusage",
    )


@pytest.mark.parametrize(
    "requested", [["manageusers"], ["nope"], [], ["read-only", "manageusers"], ["READDEV"]]
)
def test_invalid_scopes_for_a_normal_user(requested: list[str]) -> None:
    with pytest.raises(InvalidScopes):
        keys.key_scopes(requested, is_integrator=False)


def test_a_key_cannot_grant_what_it_lacks() -> None:
    granter = frozenset({"managekeys", "readdev"})
    assert keys.key_scopes(["readdev"], is_integrator=False, granter=granter) == ("readdev",)
    with pytest.raises(keys.ScopeEscalation) as raised:
        keys.key_scopes(["read-only"], is_integrator=False, granter=granter)
    assert raised.value.missing == ("readdata", "readorbit")


@pytest.mark.parametrize("name", ["main", "k-1.prod_2", "A" * 64])
def test_valid_key_names(name: str) -> None:
    assert keys.check_key_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "A" * 65, "é", "a\x00"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(keys.InvalidKeyRequest):
        keys.check_key_name(name)


def test_recently_used_is_three_days() -> None:
    now = datetime(2024, 1, 10, tzinfo=UTC)
    assert keys.recently_used(now - timedelta(days=2, hours=23), now)
    assert not keys.recently_used(now - timedelta(days=3, seconds=1), now)
    assert not keys.recently_used(None, now)


def test_listing_merges_the_time_not_yet_written() -> None:
    created = datetime(2024, 1, 1, tzinfo=UTC)
    row = {
        "name": "k",
        "prefix": "AbCdEf",
        "scopes": ["readdev"],
        "expiration": None,
        "user": "alice",
        "revoked": False,
        "created": created,
        "last_used": created + timedelta(days=1),
    }
    assert keys.key_body(row)["last_used"] == int((created + timedelta(days=1)).timestamp())
    later = created + timedelta(days=2)
    assert keys.key_body(row, last_used=later)["last_used"] == int(later.timestamp())
    assert keys.key_body(row, last_used=created)["last_used"] == int(
        (created + timedelta(days=1)).timestamp()
    )
    assert set(keys.key_body(row)) == {
        "name",
        "prefix",
        "scopes",
        "expiration",
        "user",
        "revoked",
        "created",
        "last_used",
    }


class _FailingConn:
    async def execute(self, query: str, params: Any = None) -> None:
        raise RuntimeError("database down")


async def test_last_used_is_kept_in_memory_until_a_flush_succeeds() -> None:
    tracker = LastUsed()
    tracker.touch(1, now=100.0)
    tracker.touch(1, now=200.0)
    tracker.touch(2, now=150.0)
    assert tracker.pending(1) == datetime.fromtimestamp(200.0, UTC)
    with pytest.raises(RuntimeError):
        await tracker.flush(_FailingConn())  # type: ignore[arg-type]
    assert tracker.pending(1) == datetime.fromtimestamp(200.0, UTC)
    conn = _RecordingConn()
    assert await tracker.flush(conn) == 2  # type: ignore[arg-type]
    [(query, params)] = conn.sent
    assert query.lstrip().startswith("UPDATE api_keys")
    assert params[0] == [1, 2]
    assert tracker.pending(1) is None
    assert await tracker.flush(conn) == 0  # type: ignore[arg-type]
    assert len(conn.sent) == 1
