"""Keys and users through the real API on PostgreSQL: the contract's rules, one by one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from api.lifespan import flush_buffers
from services.accounts.keys import hash_key
from tests.api_support import Account, Api, add_key, api_on_new_schema, connect, make_account


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("keys")
    ) as running:
        yield running


@pytest.fixture
async def integrator(api: Api) -> Account:
    return await make_account(api.database_url, integrator=True)


async def test_created_key_is_shown_once_and_stored_only_as_a_hash(
    api: Api, integrator: Account
) -> None:
    created = await api.client.post(
        "/v1/keys", json={"name": "reader", "scopes": ["read-only"]}, headers=integrator.headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body.pop("key")
    assert len(key) == 64
    assert key.isalnum()
    assert key.isascii()
    assert body == {
        "name": "reader",
        "prefix": key[:6],
        "scopes": ["readdata", "readdev", "readorbit"],
        "expiration": None,
        "user": integrator.username,
        "revoked": False,
        "created": body["created"],
        "last_used": None,
    }
    assert abs(body["created"] - time.time()) < 60
    # The listing never shows the key; the store has its SHA-256 and nothing else of it.
    listing = await api.client.get("/v1/keys", headers=integrator.headers)
    assert key not in listing.text
    assert {k["name"] for k in listing.json()} == {"main", "reader"}
    async with await connect(api.database_url) as conn:
        cur = await conn.execute("SELECT * FROM api_keys WHERE name = 'reader'")
        row = await cur.fetchone()
    assert row is not None
    assert row["key_hash"] == hash_key(key)
    assert key not in repr(row)
    # The new key works, with its scopes.
    reader = {"X-API-Key": key}
    assert (await api.client.get("/v1/devices", headers=reader)).status_code == 200
    assert (await api.client.get(f"/v1/devices?apikey={key}")).status_code == 200
    denied = await api.client.post(
        "/v1/devices", json={"id": "AB", "model": "orbit-t"}, headers=reader
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "missing_scope"


async def test_revoke_is_effective_on_the_very_next_request(api: Api, integrator: Account) -> None:
    key = await add_key(api.database_url, integrator, "short", ("read-only",))
    headers = {"X-API-Key": key}
    assert (await api.client.get("/v1/devices", headers=headers)).status_code == 200
    revoked = await api.client.post("/v1/keys/short/revoke", headers=integrator.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    refused = await api.client.get("/v1/devices", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"
    # Revoking again is harmless; a key cannot be edited (no PATCH/PUT route).
    assert (
        await api.client.post("/v1/keys/short/revoke", headers=integrator.headers)
    ).status_code == 200
    assert (await api.client.patch("/v1/keys/short", headers=integrator.headers)).status_code == 405


async def test_expired_key_is_refused(api: Api, integrator: Account) -> None:
    soon = time.time() + 1.5
    created = await api.client.post(
        "/v1/keys",
        json={"name": "brief", "scopes": ["readdev"], "expiration": soon},
        headers=integrator.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["expiration"] == int(soon)
    headers = {"X-API-Key": created.json()["key"]}
    assert (await api.client.get("/v1/devices", headers=headers)).status_code == 200
    await asyncio.sleep(max(0.0, soon - time.time()) + 0.1)
    expired = await api.client.get("/v1/devices", headers=headers)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "expired_api_key"
    past = await api.client.post(
        "/v1/keys",
        json={"name": "past", "scopes": ["readdev"], "expiration": time.time() - 10},
        headers=integrator.headers,
    )
    assert past.status_code == 422


async def test_delete_needs_confirmation_and_force_when_recently_used(
    api: Api, integrator: Account
) -> None:
    unused = await add_key(api.database_url, integrator, "unused", ("readdev",))
    assert unused
    no_confirm = await api.client.delete("/v1/keys/unused", headers=integrator.headers)
    assert no_confirm.status_code == 400
    assert no_confirm.json()["error"]["code"] == "confirmation_required"
    wrong = await api.client.delete("/v1/keys/unused?confirm=other", headers=integrator.headers)
    assert wrong.status_code == 400
    ok = await api.client.delete("/v1/keys/unused?confirm=unused", headers=integrator.headers)
    assert ok.status_code == 204
    gone = await api.client.delete("/v1/keys/unused?confirm=unused", headers=integrator.headers)
    assert gone.status_code == 404

    used = await add_key(api.database_url, integrator, "used", ("readdev",))
    assert (await api.client.get("/v1/devices", headers={"X-API-Key": used})).status_code == 200
    # Not yet flushed to the database: the in-memory time counts all the same.
    conflict = await api.client.delete("/v1/keys/used?confirm=used", headers=integrator.headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "recently_used"
    forced = await api.client.delete(
        "/v1/keys/used?confirm=used&force=true", headers=integrator.headers
    )
    assert forced.status_code == 204
    assert (await api.client.get("/v1/devices", headers={"X-API-Key": used})).status_code == 401


async def test_a_use_older_than_three_days_needs_no_force(api: Api, integrator: Account) -> None:
    await add_key(api.database_url, integrator, "old", ("readdev",))
    async with await connect(api.database_url) as conn:
        await conn.execute(
            "UPDATE api_keys SET last_used = %s WHERE name = 'old' AND user_id = %s",
            (datetime.now(UTC) - timedelta(days=3, minutes=1), integrator.user_id),
        )
    deleted = await api.client.delete("/v1/keys/old?confirm=old", headers=integrator.headers)
    assert deleted.status_code == 204


async def test_last_used_is_written_in_batches(api: Api, integrator: Account) -> None:
    key = await add_key(api.database_url, integrator, "batched", ("readdev",))

    async def stored() -> datetime | None:
        async with await connect(api.database_url) as conn:
            cur = await conn.execute(
                "SELECT last_used FROM api_keys WHERE name = 'batched' AND user_id = %s",
                (integrator.user_id,),
            )
            row = await cur.fetchone()
        assert row is not None
        return row["last_used"]

    for _ in range(5):
        assert (await api.client.get("/v1/devices", headers={"X-API-Key": key})).status_code == 200
    assert await stored() is None  # no write per request
    listing = await api.client.get("/v1/keys", headers=integrator.headers)
    [batched] = [k for k in listing.json() if k["name"] == "batched"]
    assert batched["last_used"] is not None
    assert abs(batched["last_used"] - time.time()) < 60
    await flush_buffers(api.ctx, api.ctx.api_services())
    written = await stored()
    assert written is not None
    assert abs(written.timestamp() - time.time()) < 60


async def test_invalid_keys_are_401_without_detail(api: Api) -> None:
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "x" * 64}, {"X-API-Key": "short"}):
        answer = await api.client.get("/v1/devices", headers=headers)
        assert answer.status_code == 401
        assert set(answer.json()["error"]) == {"code", "message"}


async def test_scopes_presets_and_integrator_only(api: Api, integrator: Account) -> None:
    user = await api.client.post(
        "/v1/users", json={"username": f"{integrator.username}-a"}, headers=integrator.headers
    )
    assert user.status_code == 201, user.text
    username = user.json()["username"]
    assert user.json() == {
        "username": username,
        "integrator": False,
        "parent": integrator.username,
        "created": user.json()["created"],
    }

    async def create(body: dict[str, object]) -> tuple[int, dict[str, object]]:
        answer = await api.client.post("/v1/keys", json=body, headers=integrator.headers)
        return answer.status_code, answer.json()

    # An integrator-only scope on a normal user's key: 422.
    status, body = await create({"name": "k1", "scopes": ["manageusers"], "user": username})
    assert status == 422, body
    # The admin preset for a user: everything a user may hold, not manageusers.
    status, body = await create({"name": "k2", "scopes": ["admin"], "user": username})
    assert status == 201, body
    assert body["user"] == username
    assert "manageusers" not in body["scopes"]
    assert "managekeys" in body["scopes"]
    status, body = await create({"name": "k3", "scopes": ["read-write"], "user": username})
    assert status == 201
    assert body["scopes"] == [
        "readdata",
        "readdev",
        "writedev",
        "readorbit",
        "writeorbit",
        "sendcmd",
    ]
    status, body = await create({"name": "k4", "scopes": ["nope"]})
    assert status == 422
    status, body = await create({"name": "k2", "scopes": ["readdev"], "user": username})
    assert status == 409  # the user has a k2 already
    status, body = await create({"name": "bad/name", "scopes": ["readdev"]})
    assert status == 422

    # The user's key works for the user; the user sees only its own keys.
    user_key = {"X-API-Key": await _key_of(api, integrator, username, "uk")}
    mine = await api.client.get("/v1/keys", headers=user_key)
    assert mine.status_code == 200
    assert {k["user"] for k in mine.json()} == {username}
    # The integrator lists its users' keys too.
    all_keys = await api.client.get("/v1/keys", headers=integrator.headers)
    assert {k["user"] for k in all_keys.json()} >= {integrator.username, username}
    # A user cannot create integrator scopes for itself, nor manage users.
    status_self = await api.client.post(
        "/v1/keys", json={"name": "mine", "scopes": ["manageusers"]}, headers=user_key
    )
    assert status_self.status_code == 422
    assert (await api.client.get("/v1/users", headers=user_key)).status_code == 403


async def _key_of(api: Api, integrator: Account, username: str, name: str) -> str:
    answer = await api.client.post(
        "/v1/keys",
        json={"name": name, "scopes": ["admin"], "user": username},
        headers=integrator.headers,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["key"])


async def test_a_key_cannot_grant_what_it_lacks(api: Api, integrator: Account) -> None:
    limited = await add_key(api.database_url, integrator, "keys-only", ("managekeys",))
    escalate = await api.client.post(
        "/v1/keys",
        json={"name": "more", "scopes": ["admin"]},
        headers={"X-API-Key": limited},
    )
    assert escalate.status_code == 403
    assert escalate.json()["error"]["code"] == "missing_scope"
    same = await api.client.post(
        "/v1/keys", json={"name": "same", "scopes": ["managekeys"]}, headers={"X-API-Key": limited}
    )
    assert same.status_code == 201


async def test_users_and_keys_of_another_hierarchy_are_404(api: Api, integrator: Account) -> None:
    other = await make_account(api.database_url, integrator=True)
    theirs = await api.client.post(
        "/v1/users", json={"username": f"{other.username}-x"}, headers=other.headers
    )
    assert theirs.status_code == 201
    name = theirs.json()["username"]
    for method, path in (
        ("GET", f"/v1/users/{name}"),
        ("DELETE", f"/v1/users/{name}"),
        ("POST", f"/v1/keys/main/revoke?user={name}"),
        ("DELETE", f"/v1/keys/main?user={name}&confirm=main"),
        ("POST", f"/v1/keys/main/revoke?user={other.username}"),
    ):
        answer = await api.client.request(method, path, headers=integrator.headers)
        assert answer.status_code == 404, (method, path, answer.text)
    create = await api.client.post(
        "/v1/keys",
        json={"name": "x", "scopes": ["readdev"], "user": name},
        headers=integrator.headers,
    )
    assert create.status_code == 404
    listing = await api.client.get("/v1/users", headers=integrator.headers)
    assert name not in listing.text
    # The other integrator's key still works: nothing was revoked.
    assert (await api.client.get("/v1/users", headers=other.headers)).status_code == 200


async def test_delete_user_refused_while_it_owns_devices(api: Api, integrator: Account) -> None:
    username = f"{integrator.username}-d"
    assert (
        await api.client.post("/v1/users", json={"username": username}, headers=integrator.headers)
    ).status_code == 201
    device = await api.client.post(
        "/v1/devices",
        json={"id": f"D{integrator.user_id:07X}"[:8], "model": "orbit-t", "owner": username},
        headers=integrator.headers,
    )
    assert device.status_code == 201, device.text
    conflict = await api.client.delete(f"/v1/users/{username}", headers=integrator.headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "user_has_devices"
    device_id = device.json()["id"]
    assert (
        await api.client.delete(f"/v1/devices/{device_id}", headers=integrator.headers)
    ).status_code == 204
    assert (
        await api.client.delete(f"/v1/users/{username}", headers=integrator.headers)
    ).status_code == 204
    assert (
        await api.client.get(f"/v1/users/{username}", headers=integrator.headers)
    ).status_code == 404
