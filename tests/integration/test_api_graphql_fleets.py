"""Issue #20: the Sensium-style GraphQL query (the account, its fleets with their assets and
latest readings, its places with their devices) in one request, with REST's scopes and
tenancy, and batched: the number of SQL statements does not grow with the fleets."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from services.platform.events import DataPoint
from services.readings.points import store_points
from tests.api_support import Account, Api, api_on_new_schema, connect, make_account

SENSIUM = """
{ account { id name contactName country
    fleets { id name assets { id name latest { metric value unit time } } }
    places { id name type devices { id } } } }
"""

#: Set while the test's own request runs: the app's background tasks are not counted.
_counting: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "counting", default=None
)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count every statement a cursor executes while ``_counting`` is set (every
    ``conn.execute`` goes through a cursor)."""
    execute = psycopg.AsyncCursor.execute

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen = _counting.get()
        if seen is not None:
            seen.append(str(query))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted)


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("graphql-fleets")
    ) as running:
        yield running


async def gql(api: Api, account: Account, query: str) -> tuple[dict[str, Any], list[str]]:
    """The answer and the SQL statements it took."""
    seen: list[str] = []
    token = _counting.set(seen)
    try:
        answer = await api.client.post(
            "/v1/graphql", json={"query": query}, headers=account.headers
        )
    finally:
        _counting.reset(token)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body, seen


async def _fleet(api: Api, account: Account, name: str, devices: list[str]) -> int:
    created = await api.client.post("/v1/fleets", json={"name": name}, headers=account.headers)
    assert created.status_code == 201, created.text
    fid: int = created.json()["id"]
    for device in devices:
        put = await api.client.put(f"/v1/fleets/{fid}/devices/{device}", headers=account.headers)
        assert put.status_code == 200, put.text
    return fid


async def _devices(api: Api, integrator: Account, owner: Account, ids: list[str]) -> list[str]:
    for device in ids:
        body = {"id": device, "model": "json", "name": f"fridge {device}", "owner": owner.username}
        created = await api.client.post("/v1/devices", json=body, headers=integrator.headers)
        assert created.status_code == 201, created.text
    async with await connect(api.database_url) as conn:
        await store_points(
            conn,
            [
                DataPoint(d, 1_700_000_000 + i, "temperature", 3.0 + i, "°C")
                for i, d in enumerate(ids)
            ],
        )
    return ids


async def test_the_sensium_query_in_one_request(api: Api, statements: None) -> None:
    integrator = await make_account(api.database_url, integrator=True)
    user = await make_account(
        api.database_url, f"{integrator.username}-u", parent=integrator.username
    )
    c, h = api.client, integrator.headers
    patched = await c.patch(
        "/v1/account",
        json={"name": "Acme Retail", "contact_name": "Jane Roe", "country": "DE"},
        headers=h,
    )
    assert patched.status_code == 200, patched.text
    tag = integrator.user_id
    a, b = await _devices(api, integrator, integrator, [f"g-a-{tag}", f"g-b-{tag}"])
    [u] = await _devices(api, integrator, user, [f"g-u-{tag}"])
    fid = await _fleet(api, integrator, "Store 12 fridges", [a, u])
    place = await c.post("/v1/places", json={"name": "Store 12", "type": "store"}, headers=h)
    pid = place.json()["id"]
    for device in (b, u):
        await c.put(f"/v1/devices/{device}/place", json={"place": pid}, headers=h)

    body, _ = await gql(api, integrator, SENSIUM)
    assert "errors" not in body, body

    def latest(device: str, value: float, time: float) -> dict[str, Any]:
        return {
            "id": device,
            "name": f"fridge {device}",
            "latest": [{"metric": "temperature", "value": value, "unit": "°C", "time": time}],
        }

    assert body["data"] == {
        "account": {
            "id": integrator.user_id,
            "name": "Acme Retail",
            "contactName": "Jane Roe",
            "country": "DE",
            "fleets": [
                {
                    "id": fid,
                    "name": "Store 12 fridges",
                    "assets": [latest(a, 3.0, 1_700_000_000.0), latest(u, 3.0, 1_700_000_000.0)],
                }
            ],
            "places": [
                {"id": pid, "name": "Store 12", "type": "store", "devices": [{"id": b}, {"id": u}]}
            ],
        }
    }
    # The user: the same account, fleets and places, and in them only its own device.
    mine, _ = await gql(api, user, SENSIUM)
    account = mine["data"]["account"]
    assert (account["id"], account["name"], account["country"]) == (
        integrator.user_id,
        "Acme Retail",
        "DE",
    )
    assert [[d["id"] for d in f["assets"]] for f in account["fleets"]] == [[u]]
    assert [p["devices"] for p in account["places"]] == [[{"id": u}]]
    # Another account: its own, empty.
    stranger = await make_account(api.database_url)
    theirs, _ = await gql(api, stranger, SENSIUM)
    assert theirs["data"]["account"] == {
        "id": stranger.user_id,
        "name": None,
        "contactName": None,
        "country": None,
        "fleets": [],
        "places": [],
    }


async def test_statements_do_not_grow_with_the_fleets(api: Api, statements: None) -> None:
    integrator = await make_account(api.database_url, integrator=True)
    c, h = api.client, integrator.headers
    tag = integrator.user_id
    devices = await _devices(api, integrator, integrator, [f"n-{tag}-{i}" for i in range(12)])
    await _fleet(api, integrator, "fleet 0", devices[:2])
    place = (await c.post("/v1/places", json={"name": "p0", "type": "site"}, headers=h)).json()
    await c.put(f"/v1/devices/{devices[0]}/place", json={"place": place["id"]}, headers=h)
    one, few = await gql(api, integrator, SENSIUM)
    assert len(one["data"]["account"]["fleets"]) == 1
    for i in range(1, 6):
        await _fleet(api, integrator, f"fleet {i}", devices[2 * i : 2 * i + 2])
        place = (
            await c.post("/v1/places", json={"name": f"p{i}", "type": "site"}, headers=h)
        ).json()
        await c.put(f"/v1/devices/{devices[2 * i]}/place", json={"place": place["id"]}, headers=h)
    six, many = await gql(api, integrator, SENSIUM)
    fleets = six["data"]["account"]["fleets"]
    assert len(fleets) == 6
    assert sum(len(f["assets"]) for f in fleets) == 12
    assert all(len(f["assets"][0]["latest"]) == 1 for f in fleets)
    assert len(six["data"]["account"]["places"]) == 6
    # The same statements for 1 fleet and 6 (12 assets, 6 places): one per kind of load (the
    # key's lookup, the profile, fleets, members, visible devices, latest points, places,
    # devices there).
    assert len(many) == len(few), (few, many)
    assert len(many) <= 8, many
