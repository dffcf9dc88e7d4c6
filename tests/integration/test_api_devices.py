"""Devices through the real API: CRUD, ownership within a hierarchy, export, visibility."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import pytest

from services.platform.events import DataPoint, DeviceEvent
from services.readings.device_events import store_events
from services.readings.points import store_points
from tests.api_support import Account, Api, api_on_new_schema, connect, make_account


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("devices")
    ) as running:
        yield running


@pytest.fixture
async def integrator(api: Api) -> Account:
    return await make_account(api.database_url, integrator=True)


async def _user_of(api: Api, integrator: Account, suffix: str) -> Account:
    return await make_account(
        api.database_url, f"{integrator.username}-{suffix}", parent=integrator.username
    )


async def test_crud_with_the_contract_fields(api: Api, integrator: Account) -> None:
    h = integrator.headers
    created = await api.client.post(
        "/v1/devices",
        json={"id": "70b3d57ed0000001", "model": "lorawan-lpp", "name": "n"},
        headers=h,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body == {
        "id": "70B3D57ED0000001",
        "name": "n",
        "model": "lorawan-lpp",
        "network": "lorawan",
        "owner": integrator.username,
        "active": True,
        "created": body["created"],
        "last_seen": None,
    }
    # Case-insensitive ids.
    got = await api.client.get("/v1/devices/70b3d57ed0000001", headers=h)
    assert got.status_code == 200
    assert got.json() == body
    duplicate = await api.client.post(
        "/v1/devices", json={"id": "70B3D57ED0000001", "model": "lorawan-lpp"}, headers=h
    )
    assert duplicate.status_code == 409
    patched = await api.client.patch(
        "/v1/devices/70B3D57ED0000001", json={"name": "roof", "active": False}, headers=h
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "roof"
    assert patched.json()["active"] is False
    unchanged = await api.client.patch("/v1/devices/70B3D57ED0000001", json={}, headers=h)
    assert unchanged.json() == patched.json()
    activated = await api.client.post("/v1/devices/70B3D57ED0000001/activate", headers=h)
    assert activated.status_code == 200
    assert activated.json()["active"] is True
    deactivated = await api.client.post("/v1/devices/70B3D57ED0000001/deactivate", headers=h)
    assert deactivated.json()["active"] is False
    assert (await api.client.delete("/v1/devices/70B3D57ED0000001", headers=h)).status_code == 204
    assert (await api.client.get("/v1/devices/70B3D57ED0000001", headers=h)).status_code == 404


async def test_invalid_devices_are_422(api: Api, integrator: Account) -> None:
    for body in (
        {"id": "XYZ", "model": "orbit-t"},  # not hex
        {"id": "123", "model": "nope"},
        {"id": "ABC", "model": "lorawan-lpp"},  # DevEUI is 16 hex digits
        {"id": "export.csv", "model": "json"},  # would shadow the export route
        {"id": "a/b", "model": "json"},
    ):
        answer = await api.client.post("/v1/devices", json=body, headers=integrator.headers)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] in ("invalid_device", "invalid")


async def test_ids_made_only_of_dots_are_422_naming_the_rule(api: Api, integrator: Account) -> None:
    """Issue #19: clients and proxies that normalise paths cannot address ``/v1/devices/..``."""
    for device_id in (".", "..", "..."):
        answer = await api.client.post(
            "/v1/devices", json={"id": device_id, "model": "json"}, headers=integrator.headers
        )
        assert answer.status_code == 422, (device_id, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_device"
        assert "only of dots" in error["message"]
    dotted = await api.client.post(
        "/v1/devices", json={"id": "..a", "model": "json"}, headers=integrator.headers
    )
    assert dotted.status_code == 201, dotted.text


async def test_integrator_gives_and_moves_devices_between_its_users(
    api: Api, integrator: Account
) -> None:
    alice = await _user_of(api, integrator, "alice")
    bob = await _user_of(api, integrator, "bob")
    created = await api.client.post(
        "/v1/devices",
        json={"id": "sensor-1", "model": "json", "owner": alice.username},
        headers=integrator.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == alice.username
    assert [
        d["id"] for d in (await api.client.get("/v1/devices", headers=alice.headers)).json()
    ] == ["sensor-1"]
    assert (await api.client.get("/v1/devices", headers=bob.headers)).json() == []
    assert (await api.client.get("/v1/devices/sensor-1", headers=bob.headers)).status_code == 404
    moved = await api.client.patch(
        "/v1/devices/sensor-1", json={"owner": bob.username}, headers=integrator.headers
    )
    assert moved.status_code == 200
    assert moved.json()["owner"] == bob.username
    assert (await api.client.get("/v1/devices/sensor-1", headers=alice.headers)).status_code == 404
    assert (await api.client.get("/v1/devices/sensor-1", headers=bob.headers)).status_code == 200
    # A normal user cannot give its device away, nor register one for somebody else.
    refused = await api.client.patch(
        "/v1/devices/sensor-1", json={"owner": alice.username}, headers=bob.headers
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_owner"
    refused = await api.client.post(
        "/v1/devices",
        json={"id": "sensor-2", "model": "json", "owner": alice.username},
        headers=bob.headers,
    )
    assert refused.status_code == 422
    # Its own device, registered without an owner, is its own.
    own = await api.client.post(
        "/v1/devices", json={"id": "sensor-3", "model": "json"}, headers=bob.headers
    )
    assert own.status_code == 201
    assert own.json()["owner"] == bob.username
    # The integrator sees all of its account.
    ids = {
        d["id"] for d in (await api.client.get("/v1/devices", headers=integrator.headers)).json()
    }
    assert {"sensor-1", "sensor-3"} <= ids


async def test_another_hierarchy_is_invisible(api: Api, integrator: Account) -> None:
    other = await make_account(api.database_url, integrator=True)
    other_user = await _user_of(api, other, "x")
    created = await api.client.post(
        "/v1/devices",
        json={"id": "theirs-1", "model": "relay-controller", "owner": other_user.username},
        headers=other.headers,
    )
    assert created.status_code == 201
    for method, path, body in (
        ("GET", "/v1/devices/theirs-1", None),
        ("PATCH", "/v1/devices/theirs-1", {"name": "mine"}),
        ("DELETE", "/v1/devices/theirs-1", None),
        ("POST", "/v1/devices/theirs-1/activate", None),
        ("POST", "/v1/devices/theirs-1/deactivate", None),
    ):
        answer = await api.client.request(method, path, json=body, headers=integrator.headers)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["error"]["code"] == "device_not_found"
    # Moving one's own device to another hierarchy's user is refused like an unknown owner.
    mine = await api.client.post(
        "/v1/devices", json={"id": "mine-1", "model": "json"}, headers=integrator.headers
    )
    assert mine.status_code == 201
    refused = await api.client.patch(
        "/v1/devices/mine-1", json={"owner": other_user.username}, headers=integrator.headers
    )
    assert refused.status_code == 422
    listing = await api.client.get("/v1/devices", headers=integrator.headers)
    assert "theirs-1" not in listing.text
    export = await api.client.get("/v1/devices/export.csv", headers=integrator.headers)
    assert "theirs-1" not in export.text
    # Registering an id that exists elsewhere is a conflict (ids are global), no details.
    taken = await api.client.post(
        "/v1/devices", json={"id": "theirs-1", "model": "json"}, headers=integrator.headers
    )
    assert taken.status_code == 409
    assert other_user.username not in taken.text


async def test_ids_are_compared_case_insensitively(api: Api, integrator: Account) -> None:
    other = await make_account(api.database_url, integrator=True)
    created = await api.client.post(
        "/v1/devices", json={"id": "Case-Dev", "model": "json"}, headers=other.headers
    )
    assert created.status_code == 201
    # Another hierarchy cannot register the same id in another case, nor see the device.
    for taken_id in ("case-dev", "CASE-DEV"):
        taken = await api.client.post(
            "/v1/devices", json={"id": taken_id, "model": "json"}, headers=integrator.headers
        )
        assert taken.status_code == 409, taken.text
        assert taken.json()["error"]["code"] == "device_exists"
        hidden = await api.client.get(f"/v1/devices/{taken_id}", headers=integrator.headers)
        assert hidden.status_code == 404
    # Its owner finds it in any case, and it keeps the case it was registered with.
    for asked in ("case-dev", "CASE-DEV", "Case-Dev"):
        got = await api.client.get(f"/v1/devices/{asked}", headers=other.headers)
        assert got.status_code == 200, asked
        assert got.json()["id"] == "Case-Dev"
    patched = await api.client.patch(
        "/v1/devices/case-dev", json={"name": "renamed"}, headers=other.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "renamed"
    # A hex id in lower case is the upper-case device.
    sigfox = await api.client.post(
        "/v1/devices", json={"id": "c0ffee", "model": "orbit-t"}, headers=other.headers
    )
    assert sigfox.json()["id"] == "C0FFEE"
    got = await api.client.get("/v1/devices/c0ffee", headers=other.headers)
    assert got.json()["id"] == "C0FFEE"
    deleted = await api.client.delete("/v1/devices/case-DEV", headers=other.headers)
    assert deleted.status_code == 204
    gone = await api.client.get("/v1/devices/Case-Dev", headers=other.headers)
    assert gone.status_code == 404


async def test_a_deleted_devices_data_goes_with_it(api: Api, integrator: Account) -> None:
    """Whoever registers the id next (here another hierarchy) reads nothing of the old device."""
    other = await make_account(api.database_url, integrator=True)
    for account, value in ((integrator, 21.5), (other, None)):
        created = await api.client.post(
            "/v1/devices", json={"id": "de1e7e", "model": "orbit-t"}, headers=account.headers
        )
        assert created.status_code == 201, created.text
        paths = (
            "/v1/devices/DE1E7E/data",
            "/v1/devices/DE1E7E/data/aggregate?bucket=3600&fn=count",
            "/v1/devices/DE1E7E/events",
        )
        if value is not None:  # the first owner's data: a point and an event
            async with await connect(api.database_url) as conn:
                await store_points(conn, [DataPoint("DE1E7E", 1.7e9, "temperature", value, "°C")])
                event = DeviceEvent("DE1E7E", 1.7e9, "status", {"battery_mv": 3000})
                await store_events(conn, [(event, "de1e7e-status")])
            bodies = [(await api.client.get(p, headers=account.headers)).json() for p in paths]
            assert [len(b.get("data", b.get("events", []))) for b in bodies] == [1, 1, 1]
            deleted = await api.client.delete("/v1/devices/DE1E7E", headers=account.headers)
            assert deleted.status_code == 204
        else:
            for path in paths:
                answer = await api.client.get(path, headers=account.headers)
                assert answer.status_code == 200, answer.text
                assert answer.json().get("data", answer.json().get("events")) == [], path


async def test_export_csv(api: Api, integrator: Account) -> None:
    h = integrator.headers
    await api.client.post(
        "/v1/devices", json={"id": "c1", "model": "json", "name": "=HYPERLINK(1)"}, headers=h
    )
    await api.client.post(
        "/v1/devices", json={"id": "1a2b3c4d", "model": "orbit-th", "name": 'a, "b"'}, headers=h
    )
    answer = await api.client.get("/v1/devices/export.csv", headers=h)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    by_id = {row["id"]: row for row in rows}
    assert by_id["1A2B3C4D"]["name"] == 'a, "b"'
    assert by_id["1A2B3C4D"]["model"] == "orbit-th"
    assert by_id["1A2B3C4D"]["network"] == "sigfox"
    assert by_id["1A2B3C4D"]["owner"] == integrator.username
    assert by_id["1A2B3C4D"]["active"] == "true"
    assert by_id["1A2B3C4D"]["last_seen"] == ""
    assert by_id["c1"]["name"] == "'=HYPERLINK(1)"  # no formula for a spreadsheet
    assert list(rows[0]) == [
        "id",
        "name",
        "model",
        "network",
        "owner",
        "active",
        "created",
        "last_seen",
    ]
    # The export needs readdev like the listing.
    assert (await api.client.get("/v1/devices/export.csv")).status_code == 401
