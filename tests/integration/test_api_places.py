"""Issue #20 through the real API: places (tenancy, scopes, validation), a device's place and
its history, readings attributed to where their device was (the place's aggregate), and a
deleted device's stay closed but kept."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.platform.events import DataPoint
from services.readings.points import store_points
from tests.api_support import Account, Api, add_key, api_on_new_schema, connect, make_account

DAY = 86_400


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("places")
    ) as running:
        yield running


async def _hierarchy(api: Api) -> tuple[Account, Account]:
    integrator = await make_account(api.database_url, integrator=True)
    user = await make_account(
        api.database_url, f"{integrator.username}-u", parent=integrator.username
    )
    return integrator, user


async def _device(api: Api, by: Account, device: str, owner: Account | None = None) -> str:
    """A device registered 30 days ago (so that its stays can be dated in the past)."""
    body = {"id": device, "model": "json", "owner": (owner or by).username}
    created = await api.client.post("/v1/devices", json=body, headers=by.headers)
    assert created.status_code == 201, created.text
    async with await connect(api.database_url) as conn:
        await conn.execute(
            "UPDATE devices SET created = now() - interval '30 days' WHERE id = %s", (device,)
        )
    return device


async def _place(api: Api, account: Account, name: str, **extra: Any) -> dict[str, Any]:
    created = await api.client.post(
        "/v1/places", json={"name": name, "type": "cold room", **extra}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def _error(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, answer.text
    return error


async def test_places_crud_tenancy_scopes_and_validation(api: Api) -> None:
    integrator, user = await _hierarchy(api)
    c, h = api.client, integrator.headers
    place = await _place(
        api,
        integrator,
        "Store 12",
        location={"latitude": 48.8566, "longitude": 2.3522},
        address="1 rue de Rivoli, Paris",
    )
    pid = place["id"]
    assert place == {
        "id": pid,
        "name": "Store 12",
        "type": "cold room",
        "location": {"latitude": 48.8566, "longitude": 2.3522},
        "address": "1 rue de Rivoli, Paris",
        "created": place["created"],
        "devices": [],
    }
    # Free-text type; left out: kept; null clears location and address.
    patched = await c.patch(
        f"/v1/places/{pid}", json={"type": "walk-in freezer", "location": None}, headers=h
    )
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**place, "type": "walk-in freezer", "location": None}
    assert (await c.get(f"/v1/places/{pid}", headers=user.headers)).json() == patched.json()
    assert [p["name"] for p in (await c.get("/v1/places", headers=user.headers)).json()] == [
        "Store 12"
    ]
    # Only the integrator changes places; a read-only key none.
    for method, path, json in (
        ("POST", "/v1/places", {"name": "x", "type": "site"}),
        ("PATCH", f"/v1/places/{pid}", {"name": "x"}),
        ("DELETE", f"/v1/places/{pid}", None),
    ):
        answer = await c.request(method, path, json=json, headers=user.headers)
        _error(answer, 403, "account_owner_only")
        ro = {
            "X-API-Key": await add_key(api.database_url, integrator, f"ro-{method}", ("read-only",))
        }
        _error(await c.request(method, path, json=json, headers=ro), 403, "missing_scope")
    # 422 naming the field.
    for method, path, json, field in (
        ("POST", "/v1/places", {"name": "x"}, "type"),
        ("POST", "/v1/places", {"name": "", "type": "site"}, "name"),
        (
            "POST",
            "/v1/places",
            {"name": "x", "type": "site", "location": {"latitude": 91, "longitude": 0}},
            "location.latitude",
        ),
        (
            "POST",
            "/v1/places",
            {"name": "x", "type": "site", "location": {"latitude": 1}},
            "location.longitude",
        ),
        ("PATCH", f"/v1/places/{pid}", {"name": None}, "name"),
        ("PATCH", f"/v1/places/{pid}", {"type": None}, "type"),
        ("PATCH", f"/v1/places/{pid}", {"address": "x" * 501}, "address"),
        ("GET", "/v1/places/0", None, "path.place_id"),
    ):
        error = _error(await c.request(method, path, json=json, headers=h), 422, "invalid")
        assert [d["field"] for d in error["details"]] == [field], (json, error)
    # Another account: 404, as for a place that exists nowhere; its listing shows nothing.
    stranger = await make_account(api.database_url)
    mine = await _device(api, stranger, f"pl-str-{stranger.user_id}")
    for place_id in (pid, 987654321):
        for method, path, json in (
            ("GET", f"/v1/places/{place_id}", None),
            ("PATCH", f"/v1/places/{place_id}", {"name": "stolen"}),
            ("DELETE", f"/v1/places/{place_id}", None),
            ("GET", f"/v1/places/{place_id}/history", None),
            ("GET", f"/v1/places/{place_id}/data/aggregate?bucket=60", None),
            ("GET", f"/v1/devices?place={place_id}", None),
            # Its own device cannot be moved to this account's place.
            ("PUT", f"/v1/devices/{mine}/place", {"place": place_id}),
        ):
            answer = await c.request(method, path, json=json, headers=stranger.headers)
            _error(answer, 404, "place_not_found")
    assert (await c.get("/v1/places", headers=stranger.headers)).json() == []
    assert (await c.get(f"/v1/places/{pid}", headers=h)).json()["name"] == "Store 12"
    # Delete.
    assert (await c.delete(f"/v1/places/{pid}", headers=h)).status_code == 204
    _error(await c.get(f"/v1/places/{pid}", headers=h), 404, "place_not_found")


async def test_readings_are_attributed_to_where_the_device_was(api: Api) -> None:
    integrator, user = await _hierarchy(api)
    c, h = api.client, integrator.headers
    tag = integrator.user_id
    truck = await _device(api, integrator, f"truck-{tag}", owner=user)
    other = await _device(api, integrator, f"other-{tag}")
    depot = await _place(api, integrator, "Depot", type="site")
    store = await _place(api, integrator, "Store")
    now = time.time()
    t0 = now - 20 * DAY - (now % DAY)  # midnight UTC, 20 days ago
    # The truck: at the depot from t0, at the store from t0 + 5 days, nowhere from t0 + 10 days.
    for place, since in ((depot["id"], t0), (store["id"], t0 + 5 * DAY), (None, t0 + 10 * DAY)):
        moved = await c.put(
            f"/v1/devices/{truck}/place",
            json={"place": place, "since": since},
            headers=user.headers,
        )
        assert moved.status_code == 200, moved.text
    # The other device: at the store all along.
    assert (
        await c.put(
            f"/v1/devices/{other}/place", json={"place": store["id"], "since": t0}, headers=h
        )
    ).status_code == 200
    async with await connect(api.database_url) as conn:
        await store_points(
            conn,
            [
                DataPoint(truck, t0 + d * DAY + 3600, "temperature", float(d), "°C")
                for d in range(12)
            ]
            + [
                DataPoint(other, t0 + d * DAY + 7200, "temperature", 100.0, "°C") for d in range(12)
            ],
        )
    where = await c.get(f"/v1/devices/{truck}/place", headers=user.headers)
    assert where.json() == {
        "device": truck,
        "place": None,
        "since": None,
        "history": [
            {"place": store["id"], "name": "Store", "since": t0 + 5 * DAY, "until": t0 + 10 * DAY},
            {"place": depot["id"], "name": "Depot", "since": t0, "until": t0 + 5 * DAY},
        ],
    }

    async def counted(place: dict[str, Any], account: Account, **query: Any) -> Any:
        params = {"bucket": DAY, "fn": "count", "from": t0, **query}
        answer = await c.get(
            f"/v1/places/{place['id']}/data/aggregate", params=params, headers=account.headers
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    at_depot = await counted(depot, integrator)
    assert at_depot["devices"] == [truck]
    assert at_depot["series"] == [
        {
            "device": truck,
            "data": [{"time": t0 + d * DAY, "metric": "temperature", "value": 1} for d in range(5)],
        }
    ]
    at_store = await counted(store, integrator)
    assert [s["device"] for s in at_store["series"]] == sorted([other, truck])
    by_device = {s["device"]: s["data"] for s in at_store["series"]}
    assert [r["time"] for r in by_device[truck]] == [t0 + d * DAY for d in range(5, 10)]
    assert len(by_device[other]) == 12
    # Combined: the devices' values of each day, the truck's only while it was there.
    highest = await counted(store, integrator, fn="max", combine="min")
    assert [(r["time"], r["value"]) for r in highest["series"][0]["data"]] == [
        (t0 + d * DAY, float(d) if 5 <= d < 10 else 100.0) for d in range(12)
    ]
    # The user sees its truck only.
    assert (await counted(store, user))["devices"] == [truck]
    # The histories of the places.
    history = await c.get(f"/v1/places/{store['id']}/history", headers=h)
    assert history.json() == {
        "place": store["id"],
        "stays": [
            {"device": truck, "since": t0 + 5 * DAY, "until": t0 + 10 * DAY},
            {"device": other, "since": t0, "until": None},
        ],
    }
    assert [
        s["device"]
        for s in (await c.get(f"/v1/places/{store['id']}/history", headers=user.headers)).json()[
            "stays"
        ]
    ] == [truck]
    # Devices at a place now: the filter and the place's body.
    assert [
        d["id"] for d in (await c.get(f"/v1/devices?place={store['id']}", headers=h)).json()
    ] == [other]
    assert (await c.get(f"/v1/places/{store['id']}", headers=h)).json()["devices"] == [other]
    assert (await c.get(f"/v1/places/{store['id']}", headers=user.headers)).json()["devices"] == []


async def test_moves_are_checked(api: Api) -> None:
    integrator, user = await _hierarchy(api)
    c, h = api.client, integrator.headers
    device = await _device(api, integrator, f"mv-{integrator.user_id}")
    a = await _place(api, integrator, "A")
    b = await _place(api, integrator, "B")
    url = f"/v1/devices/{device}/place"
    now = time.time()
    first = await c.put(url, json={"place": a["id"], "since": now - 3 * DAY}, headers=h)
    assert first.json()["place"]["name"] == "A"
    assert first.json()["since"] == pytest.approx(now - 3 * DAY)
    # The same place again: nothing changes (the stay keeps its start).
    again = await c.put(url, json={"place": a["id"]}, headers=h)
    assert again.json() == first.json()
    for since, why in (
        (now - 4 * DAY, "current stay started later"),
        (now + 3600, "future"),
        (now - 40 * DAY, "registration"),
    ):
        error = _error(
            await c.put(url, json={"place": b["id"], "since": since}, headers=h),
            422,
            "invalid_since",
        )
        assert error["details"][0]["field"] == "since"
        assert why in error["message"]
    # A move dated at the current stay's start corrects it.
    corrected = await c.put(url, json={"place": b["id"], "since": now - 3 * DAY}, headers=h)
    assert [s["name"] for s in corrected.json()["history"]] == ["B"]
    # Default: now.
    moved = await c.put(url, json={"place": a["id"]}, headers=h)
    assert moved.json()["since"] == pytest.approx(time.time(), abs=5)
    assert [s["name"] for s in moved.json()["history"]] == ["A", "B"]
    # Scopes and visibility.
    ro = {"X-API-Key": await add_key(api.database_url, integrator, "ro", ("read-only",))}
    _error(await c.put(url, json={"place": None}, headers=ro), 403, "missing_scope")
    assert (await c.get(url, headers=ro)).status_code == 200
    _error(await c.get(url, headers=user.headers), 404, "device_not_found")
    _error(await c.put(url, json={"place": None}, headers=user.headers), 404, "device_not_found")
    for body, field in (
        ({}, "place"),
        ({"place": "x"}, "place"),
        ({"place": None, "since": -1}, "since"),
    ):
        error = _error(await c.put(url, json=body, headers=h), 422, "invalid")
        assert [d["field"] for d in error["details"]] == [field]
    # A place with a device there cannot be deleted.
    _error(await c.delete(f"/v1/places/{a['id']}", headers=h), 409, "place_in_use")


async def test_deleting_a_device_closes_its_stay_and_keeps_the_history(api: Api) -> None:
    integrator, user = await _hierarchy(api)
    c, h = api.client, integrator.headers
    device = await _device(api, integrator, f"gone-{integrator.user_id}", owner=user)
    place = await _place(api, integrator, "Room 1", type="room")
    fleet = (await c.post("/v1/fleets", json={"name": "f"}, headers=h)).json()["id"]
    await c.put(f"/v1/fleets/{fleet}/devices/{device}", headers=h)
    since = time.time() - DAY
    await c.put(
        f"/v1/devices/{device}/place", json={"place": place["id"], "since": since}, headers=h
    )
    assert (await c.delete(f"/v1/devices/{device}", headers=h)).status_code == 204
    deleted_at = time.time()
    # Out of its fleet and its place...
    assert (await c.get(f"/v1/fleets/{fleet}", headers=h)).json()["devices"] == []
    assert (await c.get(f"/v1/places/{place['id']}", headers=h)).json()["devices"] == []
    # ...while the place keeps its stay, closed at the deletion (for the integrator: the user
    # no longer sees the device).
    stays = (await c.get(f"/v1/places/{place['id']}/history", headers=h)).json()["stays"]
    assert len(stays) == 1
    assert stays[0]["device"] == device
    assert stays[0]["since"] == pytest.approx(since)
    assert deleted_at - 60 < stays[0]["until"] <= deleted_at + 1
    assert (await c.get(f"/v1/places/{place['id']}/history", headers=user.headers)).json()[
        "stays"
    ] == []
    # The same id registered again is another device: no place, no history.
    again = await c.post("/v1/devices", json={"id": device, "model": "json"}, headers=h)
    assert again.status_code == 201
    fresh = await c.get(f"/v1/devices/{device}/place", headers=h)
    assert fresh.json() == {"device": device, "place": None, "since": None, "history": []}
    # The place is free again: it can be deleted, with its history.
    assert (await c.delete(f"/v1/places/{place['id']}", headers=h)).status_code == 204
