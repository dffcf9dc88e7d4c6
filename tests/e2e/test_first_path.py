"""The first data path: a Sigfox callback to a REST query, all real."""

from __future__ import annotations

import time

from tests.stack import Stack, eventually

SAMPLE = {"device": "1A2B3C", "time": 1700000000, "data": "010f08fc0906", "seqNumber": 1}


async def test_sigfox_callback_to_rest_query(stack: Stack) -> None:
    headers = {"X-API-Key": stack.api_key}
    created = await stack.client.post(
        "/v1/devices",
        json={"id": "1a2b3c", "model": "orbit-t", "name": "cold room"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "1A2B3C"

    started = time.monotonic()
    answer = await stack.client.post(
        "/callbacks/sigfox", json=SAMPLE, headers={"X-Callback-Token": stack.token}
    )
    assert answer.status_code == 204, answer.text

    async def two_points() -> list[dict[str, object]] | None:
        page = await stack.client.get("/v1/devices/1A2B3C/data", headers=headers)
        assert page.status_code == 200, page.text
        data = page.json()["data"]
        return data if len(data) == 2 else None

    data = await eventually(two_points, timeout=10)
    assert time.monotonic() - started < 5
    assert [(p["time"], p["value"], p["metric"]) for p in data] == [
        (1700000000, 23.1, "temperature"),
        (1699999100, 23.0, "temperature"),
    ]
    assert data[0]["unit"] == "°C"


async def test_same_uplink_twice_stores_each_point_once(stack: Stack) -> None:
    headers = {"X-API-Key": stack.api_key}
    await stack.client.post("/v1/devices", json={"id": "2B", "model": "orbit-t"}, headers=headers)
    body = {**SAMPLE, "device": "2B", "seqNumber": 7}
    for _ in range(3):
        answer = await stack.client.post(
            "/callbacks/sigfox", json=body, headers={"X-Callback-Token": stack.token}
        )
        assert answer.status_code == 204

    async def points() -> list[dict[str, object]] | None:
        page = await stack.client.get("/v1/devices/2B/data", headers=headers)
        data = page.json()["data"]
        return data if len(data) >= 2 else None

    await eventually(points)
    # The network's duplicates were dropped at ingest; a replay of the envelope is idempotent.
    from services.platform.events import UplinkEnvelope, dumps
    from services.platform.kafka import KafkaPublisher

    envelope = UplinkEnvelope(
        source="sigfox",
        device="2B",
        received=1700000000.0,
        payload_hex="010f08fc0906",
        meta={"seq": 7},
    )
    publisher = KafkaPublisher(stack.settings.kafka or "")
    await publisher.start()
    await publisher.publish(stack.settings.topic("uplinks"), [("2B", dumps(envelope.to_dict()))])
    await publisher.stop()
    marker = {**SAMPLE, "device": "2B", "seqNumber": 8, "time": 1700000600, "data": "010f0900"}
    await stack.client.post(
        "/callbacks/sigfox", json=marker, headers={"X-Callback-Token": stack.token}
    )

    async def marker_stored() -> list[dict[str, object]] | None:
        page = await stack.client.get("/v1/devices/2B/data", headers=headers)
        data = page.json()["data"]
        return data if any(p["time"] == 1700000600 for p in data) else None

    data = await eventually(marker_stored)
    assert sorted(p["time"] for p in data) == [1699999100, 1700000000, 1700000600]
