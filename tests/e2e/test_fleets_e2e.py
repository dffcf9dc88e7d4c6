"""Issue #20 end to end: the Sensium-style query against the whole pipeline (the API on a port,
the Faust worker as a child process), and against ``hivepipe up`` itself (``make run``): a
Sigfox uplink decoded by the worker shows up as the latest reading of a fleet's asset, beside the
account's profile and places."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.chaos.pipeline import Pipeline
from tests.stack import Stack, eventually

SENSIUM = """
{ account { id name contactName country
    fleets { id name assets { id name latest { metric value unit time } } }
    places { id name type devices { id } } } }
"""


async def test_the_sensium_query_over_the_pipeline(stack: Stack) -> None:
    await sensium_walk(stack.client, {"X-API-Key": stack.api_key}, stack.token)


async def test_the_sensium_query_on_hivepipe_up(tmp_path: Path) -> None:
    with Pipeline.start(tmp_path) as pipeline:
        async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=15) as client:
            await sensium_walk(client, {"X-API-Key": pipeline.api_key}, pipeline.token)


async def sensium_walk(client: httpx.AsyncClient, headers: dict[str, str], token: str) -> None:
    """Profile, a device in a fleet and at a place, an uplink, then the one query."""
    profile = await client.patch(
        "/v1/account",
        json={"name": "Acme Cold Chain", "contact_name": "Jane Roe", "country": "FR"},
        headers=headers,
    )
    assert profile.status_code == 200, profile.text
    device = "5E1A20"
    created = await client.post(
        "/v1/devices", json={"id": device, "model": "orbit-t", "name": "fridge 1"}, headers=headers
    )
    assert created.status_code == 201, created.text
    fleet = (await client.post("/v1/fleets", json={"name": "Fridges"}, headers=headers)).json()
    put = await client.put(f"/v1/fleets/{fleet['id']}/devices/{device}", headers=headers)
    assert put.status_code == 200, put.text
    place = (
        await client.post("/v1/places", json={"name": "Store 12", "type": "store"}, headers=headers)
    ).json()
    moved = await client.put(
        f"/v1/devices/{device}/place", json={"place": place["id"]}, headers=headers
    )
    assert moved.status_code == 200, moved.text

    uplink = {"device": device, "time": 1700000000, "data": "010f08fc0906", "seqNumber": 1}
    answer = await client.post(
        "/callbacks/sigfox", json=uplink, headers={"X-Callback-Token": token}
    )
    assert answer.status_code == 204, answer.text

    async def account() -> dict[str, Any] | None:
        body = (await client.post("/v1/graphql", json={"query": SENSIUM}, headers=headers)).json()
        assert "errors" not in body, body
        found: dict[str, Any] = body["data"]["account"]
        return found if found["fleets"][0]["assets"][0]["latest"] else None

    found = await eventually(account, timeout=30, interval=0.5)
    assert (found["name"], found["contactName"], found["country"]) == (
        "Acme Cold Chain",
        "Jane Roe",
        "FR",
    )
    assert found["fleets"] == [
        {
            "id": fleet["id"],
            "name": "Fridges",
            "assets": [
                {
                    "id": device,
                    "name": "fridge 1",
                    "latest": [
                        {"metric": "temperature", "value": 23.1, "unit": "°C", "time": 1700000000.0}
                    ],
                }
            ],
        }
    ]
    assert found["places"] == [
        {"id": place["id"], "name": "Store 12", "type": "store", "devices": [{"id": device}]}
    ]
