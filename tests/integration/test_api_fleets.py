"""Issue #20 through the real API: the account's profile and its fleets (tenancy, scopes,
validation, the fleet's aggregate, the devices' filter, a deleted device leaving its fleets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.platform.events import DataPoint
from services.readings.points import store_points
from tests.api_support import Account, Api, add_key, api_on_new_schema, connect, make_account


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("fleets")
    ) as running:
        yield running


async def _hierarchy(api: Api) -> tuple[Account, Account]:
    """An integrator and one of its users."""
    integrator = await make_account(api.database_url, integrator=True)
    user = await make_account(
        api.database_url, f"{integrator.username}-u", parent=integrator.username
    )
    return integrator, user


async def _device(api: Api, owner: Account, device: str, *, as_: Account | None = None) -> str:
    body = {"id": device, "model": "json", "owner": owner.username}
    created = await api.client.post("/v1/devices", json=body, headers=(as_ or owner).headers)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _error(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, answer.text
    return error


# --- the account's profile --------------------------------------------------------------------


async def test_the_account_profile(api: Api) -> None:
    integrator, user = await _hierarchy(api)
    c = api.client
    empty = await c.get("/v1/account", headers=user.headers)
    assert empty.json() == {
        "id": integrator.user_id,
        "name": None,
        "contact_name": None,
        "country": None,
    }
    patched = await c.patch(
        "/v1/account",
        json={"name": "Acme Cold Chain", "contact_name": "Jane Roe", "country": "fr"},
        headers=integrator.headers,
    )
    assert patched.status_code == 200, patched.text
    expected = {
        "id": integrator.user_id,
        "name": "Acme Cold Chain",
        "contact_name": "Jane Roe",
        "country": "FR",
    }
    assert patched.json() == expected
    # Every user of the account reads it; only the integrator changes it.
    assert (await c.get("/v1/account", headers=user.headers)).json() == expected
    _error(
        await c.patch("/v1/account", json={"name": "mine"}, headers=user.headers),
        403,
        "account_owner_only",
    )
    # Left out: kept; null: cleared.
    cleared = await c.patch("/v1/account", json={"contact_name": None}, headers=integrator.headers)
    assert cleared.json() == {**expected, "contact_name": None}
    # 422 naming the field.
    for body, field in (
        ({"country": "XX"}, "country"),
        ({"country": "FRA"}, "country"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"contact_name": "\x00"}, "contact_name"),
    ):
        error = _error(
            await c.patch("/v1/account", json=body, headers=integrator.headers), 422, "invalid"
        )
        assert [d["field"] for d in error["details"]] == [field], body
    # Another account: its own profile, nothing of this one.
    stranger = await make_account(api.database_url)
    theirs = await c.get("/v1/account", headers=stranger.headers)
    assert theirs.json() == {
        "id": stranger.user_id,
        "name": None,
        "contact_name": None,
        "country": None,
    }
    # A standalone user is its own account's owner.
    assert (await c.patch("/v1/account", json={"country": "US"}, headers=stranger.headers)).json()[
        "country"
    ] == "US"
    # Scopes: readdev to read, writedev to change.
    reader = await add_key(api.database_url, integrator, "reader", ("readdev",))
    assert (await c.get("/v1/account", headers={"X-API-Key": reader})).status_code == 200
    _error(
        await c.patch("/v1/account", json={"name": "n"}, headers={"X-API-Key": reader}),
        403,
        "missing_scope",
    )
    blind = await add_key(api.database_url, integrator, "blind", ("readdata",))
    _error(await c.get("/v1/account", headers={"X-API-Key": blind}), 403, "missing_scope")


# --- fleets -------------------------------------------------------------------------------------


async def test_fleets_crud_tenancy_and_membership(api: Api) -> None:
    integrator, user = await _hierarchy(api)
    c, h = api.client, integrator.headers
    tag = integrator.user_id
    own = await _device(api, integrator, f"fl-own-{tag}")
    users = await _device(api, user, f"fl-user-{tag}", as_=integrator)

    created = await c.post("/v1/fleets", json={"name": "Depot 3"}, headers=h)
    assert created.status_code == 201, created.text
    fleet = created.json()
    assert fleet == {
        "id": fleet["id"],
        "name": "Depot 3",
        "created": fleet["created"],
        "devices": [],
    }
    fid = fleet["id"]
    _error(await c.post("/v1/fleets", json={"name": "Depot 3"}, headers=h), 409, "fleet_exists")
    for device in (own, users, own):  # twice: nothing changes
        put = await c.put(f"/v1/fleets/{fid}/devices/{device.lower()}", headers=h)
        assert put.status_code == 200, put.text
    assert put.json()["devices"] == sorted([own, users])
    other = (await c.post("/v1/fleets", json={"name": "Aardvarks"}, headers=h)).json()
    listed = await c.get("/v1/fleets", headers=h)
    assert [(f["name"], f["devices"]) for f in listed.json()] == [
        ("Aardvarks", []),
        ("Depot 3", sorted([own, users])),
    ]

    # The user sees the account's fleets, and in them only its own devices.
    mine = await c.get(f"/v1/fleets/{fid}", headers=user.headers)
    assert mine.json()["devices"] == [users]
    assert [f["devices"] for f in (await c.get("/v1/fleets", headers=user.headers)).json()] == [
        [],
        [users],
    ]
    # It may put its own devices in and out, never the integrator's (404: not visible to it)...
    _error(
        await c.put(f"/v1/fleets/{fid}/devices/{own}", headers=user.headers),
        404,
        "device_not_found",
    )
    _error(
        await c.delete(f"/v1/fleets/{fid}/devices/{own}", headers=user.headers),
        404,
        "device_not_found",
    )
    assert (
        await c.delete(f"/v1/fleets/{fid}/devices/{users}", headers=user.headers)
    ).status_code == 204
    _error(
        await c.delete(f"/v1/fleets/{fid}/devices/{users}", headers=user.headers),
        404,
        "not_in_fleet",
    )
    assert (
        await c.put(f"/v1/fleets/{fid}/devices/{users}", headers=user.headers)
    ).status_code == 200
    # ...but only the integrator creates, renames and deletes fleets.
    _error(
        await c.post("/v1/fleets", json={"name": "x"}, headers=user.headers),
        403,
        "account_owner_only",
    )
    _error(
        await c.patch(f"/v1/fleets/{fid}", json={"name": "x"}, headers=user.headers),
        403,
        "account_owner_only",
    )
    _error(await c.delete(f"/v1/fleets/{fid}", headers=user.headers), 403, "account_owner_only")

    # Another account: 404 exactly as for a fleet that exists nowhere.
    stranger = await make_account(api.database_url)
    theirs = await _device(api, stranger, f"fl-theirs-{tag}")
    for method, template in (
        ("GET", "/v1/fleets/{}"),
        ("PATCH", "/v1/fleets/{}"),
        ("DELETE", "/v1/fleets/{}"),
        ("PUT", "/v1/fleets/{}/devices/" + theirs),
        ("DELETE", "/v1/fleets/{}/devices/" + theirs),
        ("GET", "/v1/fleets/{}/data/aggregate?bucket=3600"),
        ("GET", "/v1/devices?fleet={}"),
    ):
        json = {"name": "stolen"} if method == "PATCH" else None
        answer = await c.request(method, template.format(fid), json=json, headers=stranger.headers)
        nowhere = await c.request(
            method, template.format(987654321), json=json, headers=stranger.headers
        )
        _error(answer, 404, "fleet_not_found")
        _error(nowhere, 404, "fleet_not_found")
    assert (await c.get("/v1/fleets", headers=stranger.headers)).json() == []
    # Its device cannot join this account's fleet, nor this account's device its fleets.
    their_fleet = (
        await c.post("/v1/fleets", json={"name": "Depot 3"}, headers=stranger.headers)
    ).json()
    _error(
        await c.put(f"/v1/fleets/{their_fleet['id']}/devices/{own}", headers=stranger.headers),
        404,
        "device_not_found",
    )

    # The devices' filter.
    by_fleet = await c.get(f"/v1/devices?fleet={fid}", headers=h)
    assert [d["id"] for d in by_fleet.json()] == sorted([own, users])
    assert [
        d["id"] for d in (await c.get(f"/v1/devices?fleet={fid}", headers=user.headers)).json()
    ] == [users]
    assert (await c.get(f"/v1/devices?fleet={other['id']}", headers=h)).json() == []

    # Rename (409 on a taken name), then delete: the devices stay.
    renamed = await c.patch(f"/v1/fleets/{fid}", json={"name": "Depot 4"}, headers=h)
    assert renamed.json()["name"] == "Depot 4"
    _error(
        await c.patch(f"/v1/fleets/{fid}", json={"name": "Aardvarks"}, headers=h),
        409,
        "fleet_exists",
    )
    assert (await c.delete(f"/v1/fleets/{fid}", headers=h)).status_code == 204
    _error(await c.get(f"/v1/fleets/{fid}", headers=h), 404, "fleet_not_found")
    assert (await c.get(f"/v1/devices/{own}", headers=h)).status_code == 200


async def test_fleet_scopes_and_validation(api: Api) -> None:
    integrator, _ = await _hierarchy(api)
    c, h = api.client, integrator.headers
    fid = (await c.post("/v1/fleets", json={"name": "F"}, headers=h)).json()["id"]
    device = await _device(api, integrator, f"fl-scope-{integrator.user_id}")
    reader = {"X-API-Key": await add_key(api.database_url, integrator, "ro", ("read-only",))}
    assert (await c.get(f"/v1/fleets/{fid}", headers=reader)).status_code == 200
    for method, path, json in (
        ("POST", "/v1/fleets", {"name": "G"}),
        ("PATCH", f"/v1/fleets/{fid}", {"name": "G"}),
        ("DELETE", f"/v1/fleets/{fid}", None),
        ("PUT", f"/v1/fleets/{fid}/devices/{device}", None),
        ("DELETE", f"/v1/fleets/{fid}/devices/{device}", None),
    ):
        answer = await c.request(method, path, json=json, headers=reader)
        error = _error(answer, 403, "missing_scope")
        assert "writedev" in error["message"]
    no_data = {"X-API-Key": await add_key(api.database_url, integrator, "nd", ("readdev",))}
    _error(
        await c.get(f"/v1/fleets/{fid}/data/aggregate?bucket=60", headers=no_data),
        403,
        "missing_scope",
    )
    # 422 naming the field.
    for method, path, json, field in (
        ("POST", "/v1/fleets", {"name": ""}, "name"),
        ("POST", "/v1/fleets", {}, "name"),
        ("POST", "/v1/fleets", {"name": "a\x00b"}, "name"),
        ("PATCH", f"/v1/fleets/{fid}", {"name": 3}, "name"),
        ("GET", "/v1/fleets/abc", None, "fleet_id"),
        ("GET", f"/v1/fleets/{2**63}", None, "fleet_id"),
        ("GET", "/v1/devices?fleet=0", None, "fleet"),
        ("GET", f"/v1/fleets/{fid}/data/aggregate?bucket=59", None, "bucket"),
        ("GET", f"/v1/fleets/{fid}/data/aggregate?bucket=60&combine=sum", None, "combine"),
        ("GET", f"/v1/fleets/{fid}/data/aggregate?bucket=60&from=-1", None, "from"),
    ):
        error = _error(await c.request(method, path, json=json, headers=h), 422, "invalid")
        assert [d["field"].split(".")[-1] for d in error["details"]] == [field], (path, error)


async def test_fleet_aggregate_per_device_and_combined(api: Api) -> None:
    integrator, user = await _hierarchy(api)
    c, h = api.client, integrator.headers
    tag = integrator.user_id
    a = await _device(api, integrator, f"agg-a-{tag}")
    b = await _device(api, user, f"agg-b-{tag}", as_=integrator)
    idle = await _device(api, integrator, f"agg-idle-{tag}")
    fid = (await c.post("/v1/fleets", json={"name": "cold"}, headers=h)).json()["id"]
    for device in (a, b, idle):
        await c.put(f"/v1/fleets/{fid}/devices/{device}", headers=h)
    t0 = 1_700_000_000 - 1_700_000_000 % 3600
    async with await connect(api.database_url) as conn:
        await store_points(
            conn,
            [
                DataPoint(a, t0 + 10, "temperature", 2.0, "°C"),
                DataPoint(a, t0 + 20, "temperature", 4.0, "°C"),
                DataPoint(b, t0 + 30, "temperature", 9.0, "°C"),
                DataPoint(a, t0 + 3700, "temperature", 5.0, "°C"),
                DataPoint(b, t0 + 40, "humidity", 50.0, "%"),
            ],
        )
    url = f"/v1/fleets/{fid}/data/aggregate?bucket=3600&from={t0}&to={t0 + 7200}"
    per_device = await c.get(url, headers=h)
    assert per_device.status_code == 200, per_device.text
    assert per_device.json() == {
        "bucket": 3600,
        "fn": "avg",
        "combine": None,
        "devices": sorted([a, b, idle]),
        "series": [
            {
                "device": a,
                "data": [
                    {"time": t0, "metric": "temperature", "value": 3.0},
                    {"time": t0 + 3600, "metric": "temperature", "value": 5.0},
                ],
            },
            {
                "device": b,
                "data": [
                    {"time": t0, "metric": "humidity", "value": 50.0},
                    {"time": t0, "metric": "temperature", "value": 9.0},
                ],
            },
            {"device": idle, "data": []},
        ],
    }
    # Combined: each device's value of the bucket (its own average), then across devices.
    for combine, first in (("avg", 6.0), ("min", 3.0), ("max", 9.0)):
        answer = await c.get(f"{url}&metric=temperature&combine={combine}", headers=h)
        assert answer.json()["series"] == [
            {
                "device": None,
                "data": [
                    {"time": t0, "metric": "temperature", "value": first},
                    {"time": t0 + 3600, "metric": "temperature", "value": 5.0},
                ],
            }
        ], combine
    counted = await c.get(f"{url}&fn=count&combine=max", headers=h)
    assert counted.json()["series"][0]["data"] == [
        {"time": t0, "metric": "humidity", "value": 1},
        {"time": t0, "metric": "temperature", "value": 2},
        {"time": t0 + 3600, "metric": "temperature", "value": 1},
    ]
    # The user: only its own device, in the series and in what is combined.
    theirs = await c.get(f"{url}&combine=max&metric=temperature", headers=user.headers)
    assert theirs.json()["devices"] == [b]
    assert theirs.json()["series"][0]["data"] == [
        {"time": t0, "metric": "temperature", "value": 9.0}
    ]
    # An empty fleet answers empty series.
    empty = (await c.post("/v1/fleets", json={"name": "empty"}, headers=h)).json()["id"]
    assert (await c.get(f"/v1/fleets/{empty}/data/aggregate?bucket=60", headers=h)).json()[
        "series"
    ] == []


async def test_deleting_a_device_removes_it_from_its_fleets(api: Api) -> None:
    integrator, _ = await _hierarchy(api)
    c, h = api.client, integrator.headers
    device = await _device(api, integrator, f"fl-del-{integrator.user_id}")
    fleets = [(await c.post("/v1/fleets", json={"name": n}, headers=h)).json()["id"] for n in "ab"]
    for fid in fleets:
        await c.put(f"/v1/fleets/{fid}/devices/{device}", headers=h)
    assert (await c.delete(f"/v1/devices/{device}", headers=h)).status_code == 204
    for fid in fleets:
        assert (await c.get(f"/v1/fleets/{fid}", headers=h)).json()["devices"] == []
    # The same id registered again starts in no fleet.
    await _device(api, integrator, device)
    assert all(f["devices"] == [] for f in (await c.get("/v1/fleets", headers=h)).json())
