"""GraphQL (same keys, scopes, rate limits) and usage figures, through the real API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from api.lifespan import flush_buffers
from services.accounts import usage
from services.platform.events import DataPoint
from services.readings.points import store_points
from services.readings.state import store_state
from tests.api_support import Account, Api, api_on_new_schema, connect, make_account


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("graphql")
    ) as running:
        yield running


async def gql(api: Api, account: Account, query: str, **variables: Any) -> dict[str, Any]:
    answer = await api.client.post(
        "/graphql", json={"query": query, "variables": variables or None}, headers=account.headers
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_devices_with_nested_readings_and_state(api: Api) -> None:
    integrator = await make_account(api.database_url, integrator=True)
    user = await make_account(
        api.database_url, f"{integrator.username}-u", parent=integrator.username
    )
    for body in (
        {"id": f"{integrator.user_id:X}C", "model": "orbit-t", "owner": user.username},
        {"id": f"relay-{integrator.user_id}", "model": "relay-controller"},
    ):
        created = await api.client.post("/v1/devices", json=body, headers=integrator.headers)
        assert created.status_code == 201, created.text
    orbit_id = f"{integrator.user_id:X}C"
    async with await connect(api.database_url) as conn:
        await store_points(
            conn,
            [
                DataPoint(orbit_id, 1700000000, "temperature", 23.1, "°C"),
                DataPoint(orbit_id, 1699999100, "temperature", 23.0, "°C"),
                DataPoint(orbit_id, 1699999100, "humidity", 40.0, "%"),
            ],
        )
        await store_state(conn, f"relay-{integrator.user_id}", 1700000000, {"status": "online"})
    query = """
    { account { username integrator ratePerMinute }
      devices { id owner model readings { metric value time unit } state }
      users { username parent } }
    """
    body = await gql(api, integrator, query)
    assert "errors" not in body, body
    data = body["data"]
    assert data["account"] == {
        "username": integrator.username,
        "integrator": True,
        "ratePerMinute": api.settings.rate_limit_per_minute,
    }
    by_id = {d["id"]: d for d in data["devices"]}
    assert by_id[orbit_id]["owner"] == user.username
    assert by_id[orbit_id]["readings"] == [
        {"metric": "humidity", "value": 40.0, "time": 1699999100.0, "unit": "%"},
        {"metric": "temperature", "value": 23.1, "time": 1700000000.0, "unit": "°C"},
    ]
    assert by_id[f"relay-{integrator.user_id}"]["state"] == {"status": "online"}
    assert data["users"] == [{"username": user.username, "parent": integrator.username}]
    # The user sees its own device only; one query, one device.
    one = "query($id: String!) { devices { id } device(id: $id) { id } }"
    mine = await gql(api, user, one, id=orbit_id)
    assert mine["data"] == {"devices": [{"id": orbit_id}], "device": {"id": orbit_id}}
    # Another hierarchy sees nothing of it.
    stranger = await make_account(api.database_url)
    theirs = await gql(api, stranger, one, id=orbit_id)
    assert theirs["data"] == {"devices": [], "device": None}


async def test_orbit_parameters_and_update_mutation(api: Api) -> None:
    owner = await make_account(api.database_url)
    device = f"{owner.user_id:X}D"
    created = await api.client.post(
        "/v1/devices", json={"id": device, "model": "orbit-t"}, headers=owner.headers
    )
    assert created.status_code == 201
    body = await gql(api, owner, "query($id: String!) { device(id: $id) { orbit } }", id=device)
    assert "errors" not in body, body
    orbit = body["data"]["device"]["orbit"]
    assert orbit["device"] == device
    assert orbit["model"] == "orbit-t"
    assert orbit["pending"] == []
    updated = await gql(
        api,
        owner,
        "mutation($d: String!, $p: JSON!) { queueOrbitUpdate(device: $d, params: $p) }",
        d=device,
        p={"sample_interval": 30},
    )
    assert "errors" not in updated, updated
    pending = updated["data"]["queueOrbitUpdate"]["pending"]
    assert [(p["param"], p["value"], p["status"]) for p in pending] == [
        ("sample_interval", 30, "queued")
    ]
    bad = await gql(
        api,
        owner,
        "mutation($d: String!, $p: JSON!) { queueOrbitUpdate(device: $d, params: $p) }",
        d=device,
        p={"no_such_param": 1},
    )
    assert bad["errors"][0]["extensions"]["code"] == "invalid_params"


async def test_fields_check_their_scopes(api: Api) -> None:
    reader = await make_account(api.database_url, scopes=("readdev",))
    body = await gql(api, reader, "{ devices { id } }")
    assert body == {"data": {"devices": []}}
    denied = await gql(api, reader, "{ users { username } }")
    assert denied["data"] is None
    assert denied["errors"][0]["extensions"]["code"] == "missing_scope"
    created = await api.client.post(
        "/v1/devices",
        json={"id": f"j{reader.user_id}", "model": "json"},
        headers=(await make_account(api.database_url)).headers,
    )
    assert created.status_code == 201
    command = await gql(
        api,
        reader,
        'mutation { sendCommand(device: "x", payload: {Output: "Relay"}) { status } }',
    )
    assert command["errors"][0]["extensions"]["code"] == "missing_scope"
    # Readings need readdata: the field is null with an error, the rest is served.
    own = await make_account(api.database_url, scopes=("readdev", "writedev"))
    await api.client.post(
        "/v1/devices", json={"id": f"k{own.user_id}", "model": "json"}, headers=own.headers
    )
    partial = await gql(api, own, "{ devices { id readings { metric } } }")
    assert partial["errors"][0]["extensions"]["code"] == "missing_scope"
    assert partial["errors"][0]["path"] == ["devices", 0, "readings"]


async def test_graphql_errors_leak_nothing_and_auth_is_rest_auth(api: Api) -> None:
    account = await make_account(api.database_url)
    assert (
        await api.client.post("/graphql", json={"query": "{ devices { id } }"})
    ).status_code == 401
    for query in ("{", "{ nope }", "{ devices { id } " * 50, "query { " + "devices { id } " * 3):
        body = await gql(api, account, query)
        for error in body.get("errors", []):
            assert error["extensions"]["code"] in ("invalid_query", "internal_error")
            assert "Traceback" not in error["message"]
            assert "SELECT" not in error["message"]
    deep = "{ devices { id " + "readings { metric } " + "} }"
    assert "errors" not in await gql(api, account, deep)
    # A mutation on a device not visible: not found, not a leak.
    body = await gql(
        api, account, 'mutation { sendCommand(device: "ABC", payload: {Output: "x"}) { status } }'
    )
    assert body["errors"][0]["extensions"]["code"] == "device_not_found"


async def test_v1_path_and_variables_of_the_wrong_type(api: Api) -> None:
    account = await make_account(api.database_url)
    query = "query($id: String!) { device(id: $id) { id } }"
    # The contract's path (/v1/graphql) and the older /graphql answer alike.
    for path in ("/v1/graphql", "/graphql"):
        answer = await api.client.post(
            path, json={"query": query, "variables": {"id": "NONE"}}, headers=account.headers
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"data": {"device": None}}
    assert (await api.client.post("/v1/graphql", json={"query": query})).status_code == 401
    # A variable of the wrong type is the request's fault, said as such, not an internal error.
    body = await gql(api, account, query, id=5)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "invalid_query"
    assert "$id" in error["message"]
    assert body["data"] is None


async def test_usage_counts_api_requests_per_user_and_day(api: Api) -> None:
    integrator = await make_account(api.database_url, integrator=True)
    user = await make_account(
        api.database_url, f"{integrator.username}-v", parent=integrator.username
    )
    for _ in range(3):
        await api.client.get("/v1/devices", headers=user.headers)
    await api.client.get("/v1/devices", headers=integrator.headers)
    usage.count(user.user_id, "uplinks", 7)
    usage.count(user.user_id, "points", 14)
    usage.count(user.user_id, "deliveries", 2)
    answer = await api.client.get("/v1/usage", headers=integrator.headers)
    assert answer.status_code == 200, answer.text
    today = datetime.now(UTC).date()
    rows = {row["user"]: row for row in answer.json()["usage"]}
    assert rows[user.username] == {
        "user": user.username,
        "day": int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()),
        "date": today.isoformat(),
        "uplinks": 7,
        "points": 14,
        "deliveries": 2,
        "api_requests": 3,
    }
    # This request itself was counted before the figures were read.
    assert rows[integrator.username]["api_requests"] == 2
    # The user sees only itself; another account sees neither.
    mine = await api.client.get("/v1/usage", headers=user.headers)
    assert {row["user"] for row in mine.json()["usage"]} == {user.username}
    stranger = await make_account(api.database_url)
    theirs = await api.client.get("/v1/usage", headers=stranger.headers)
    assert {row["user"] for row in theirs.json()["usage"]} == {stranger.username}
    # Ranges.
    old = await api.client.get(
        "/v1/usage", params={"from": 1_600_000_000, "to": 1_600_086_400}, headers=user.headers
    )
    assert old.json() == {"usage": []}
    reversed_range = await api.client.get(
        "/v1/usage", params={"from": time.time(), "to": 1_600_000_000}, headers=user.headers
    )
    assert reversed_range.status_code == 422
    # Flushed in batches: the counters are in the table.
    await flush_buffers(api.ctx, api.ctx.api_services())
    async with await connect(api.database_url) as conn:
        cur = await conn.execute(
            "SELECT api_requests FROM usage_daily WHERE user_id = %s", (user.user_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    assert row["api_requests"] >= 4
