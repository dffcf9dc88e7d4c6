"""The Orbit cycle end to end, all real: REST over HTTP, the Sigfox callback and its downlink
answer, Kafka (tansu), the Faust worker (decode, Orbit acks) and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from typing import Any

from services.platform.events import TOPIC_DEVICE_EVENTS, TOPIC_UPLINKS
from tests.orbit_support import Message, of, read_until
from tests.schemas import check as check_schema
from tests.stack import Stack, eventually


def new_id() -> str:
    return uuid.uuid4().hex[:8].upper()


async def register_orbit_t(stack: Stack) -> tuple[str, dict[str, str]]:
    headers = {"X-API-Key": stack.api_key}
    device = new_id()
    created = await stack.client.post(
        "/v1/devices", json={"id": device.lower(), "model": "orbit-t"}, headers=headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == device
    return device, headers


async def callback(stack: Stack, body: dict[str, Any]) -> Any:
    return await stack.client.post(
        "/callbacks/sigfox", json=body, headers={"X-Callback-Token": stack.token}
    )


async def test_queue_downlink_ack_cycle(stack: Stack) -> None:
    device, headers = await register_orbit_t(stack)
    path = f"/v1/orbit/dev/{device}"
    before = await stack.client.get(path, headers=headers)
    assert before.status_code == 200, before.text
    assert before.json()["downlinks_left_24h"] == 4

    queued = await stack.client.post(
        path, json={"params": {"sample_interval": 30, "led": 1}}, headers=headers
    )
    assert queued.status_code == 202, queued.text
    assert [(p["param"], p["status"]) for p in queued.json()["pending"]] == [
        ("sample_interval", "queued"),
        ("led", "queued"),
    ]

    # The downlink request, quoted as Sigfox templates often are; its data is a temperature.
    now = int(time.time())
    request = {
        "device": device.lower(),
        "time": str(now),
        "data": "010f08fc",
        "seqNumber": "100",
        "deviceTypeId": "5f1a2b3c4d5e6f7a8b9c0d1e",
        "ack": "true",
        "longPolling": "false",
    }
    started = time.perf_counter()
    answer = await callback(stack, request)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {device: {"downlinkData": "a20101001e060001"}}
    assert elapsed < 2.0, f"the downlink answer took {elapsed:.3f}s"
    retried = await callback(stack, request)
    assert (retried.status_code, retried.content) == (200, answer.content)

    sent = (await stack.client.get(path, headers=headers)).json()
    assert sent["downlinks_left_24h"] == 3
    assert [(p["param"], p["status"], p["seq"]) for p in sent["pending"]] == [
        ("sample_interval", "in_flight", 1),
        ("led", "in_flight", 1),
    ]

    # The request's uplink went through the outbox to Kafka, and its point was stored.
    async def point() -> list[dict[str, Any]] | None:
        page = await stack.client.get(f"/v1/devices/{device}/data", headers=headers)
        assert page.status_code == 200, page.text
        return page.json()["data"] or None

    assert [(p["time"], p["value"]) for p in await eventually(point)] == [(now, 23.0)]

    # The ack: frame 0x10, seq 1, sample_interval=30, led=1, in the next uplink.
    ack = {"device": device, "time": now + 600, "data": "100101001e060001", "seqNumber": 101}
    assert (await callback(stack, ack)).status_code == 204

    async def acked() -> dict[str, Any] | None:
        body: dict[str, Any] = (await stack.client.get(path, headers=headers)).json()
        return body if not body["pending"] else None

    final = await eventually(acked, timeout=20)
    assert final["active"] == {
        "sample_interval": 30,
        "batch_size": 4,
        "temp_high": 40,
        "temp_low": -10,
        "led": 1,
        "downlink_every": 24,
    }
    assert final["downlinks_left_24h"] == 3

    # Every step is on device-events, in order (key = device: one partition).
    expected = ["param_queued", "param_queued", "downlink_sent", "param_ack"]
    expected += ["param_acked", "param_acked"]

    def complete(seen: list[Message]) -> bool:
        return len([m for m in seen if of(device)(m)]) >= len(expected)

    events = [
        m for m in await read_until(stack.settings, TOPIC_DEVICE_EVENTS, complete) if of(device)(m)
    ]
    assert [m["type"] for m in events] == expected
    for event in events:  # what a subscriber reads matches the documented schema
        check_schema("device-events", event)
    assert events[2]["frame"] == "a20101001e060001"
    assert (events[3]["seq"], events[3]["uplink_seq"]) == (1, 101)
    assert {(m["param"], m["value"], m["seq"]) for m in events[4:]} == {
        ("sample_interval", 30, 1),
        ("led", 1, 1),
    }
    # The retried request published nothing twice: one envelope per uplink.
    uplinks = await read_until(
        stack.settings,
        TOPIC_UPLINKS,
        lambda seen: {100, 101} <= {m["meta"]["seq"] for m in seen if of(device)(m)},
    )
    assert sorted(m["meta"]["seq"] for m in uplinks if of(device)(m)) == [100, 101]
    listed = await stack.client.get(
        f"/v1/devices/{device}/events", params={"type": "param_acked"}, headers=headers
    )
    assert listed.status_code == 200, listed.text


async def test_an_unanswered_downlink_is_queued_again_after_two_uplinks(stack: Stack) -> None:
    device, headers = await register_orbit_t(stack)
    path = f"/v1/orbit/dev/{device}"
    await stack.client.post(path, json={"params": {"led": 1}}, headers=headers)
    now = int(time.time())
    request = {"device": device, "time": now, "data": "0100", "seqNumber": 10, "ack": True}
    answer = await callback(stack, request)
    assert answer.json() == {device: {"downlinkData": "a101060001000000"}}
    # Two plain uplinks without an ack: the decode step counts them.
    for i in (1, 2):
        plain = {"device": device, "time": now + 600 * i, "data": "0100", "seqNumber": 10 + i}
        assert (await callback(stack, plain)).status_code == 204

    async def requeued() -> list[dict[str, Any]] | None:
        pending = (await stack.client.get(path, headers=headers)).json()["pending"]
        return pending if pending and pending[0]["status"] == "queued" else None

    [update] = await eventually(requeued, timeout=20)
    assert (update["param"], update["attempts"], update["seq"]) == ("led", 1, 1)
    events = await read_until(
        stack.settings,
        TOPIC_DEVICE_EVENTS,
        lambda seen: any(of(device, "param_requeued")(m) for m in seen),
    )
    [event] = [m for m in events if of(device, "param_requeued")(m)]
    assert (event["param"], event["attempts"]) == ("led", 1)
    # The next request carries it again, in a new downlink.
    again = {**request, "time": now + 1800, "seqNumber": 13}
    resent = await callback(stack, again)
    assert resent.json() == {device: {"downlinkData": "a102060001000000"}}


async def test_a_request_carrying_the_ack_gets_the_successor_and_the_worker_agrees(
    stack: Stack,
) -> None:
    device, headers = await register_orbit_t(stack)
    path = f"/v1/orbit/dev/{device}"
    await stack.client.post(path, json={"params": {"led": 1}}, headers=headers)
    now = int(time.time())
    first = await callback(
        stack, {"device": device, "time": now, "data": "", "seqNumber": 300, "ack": True}
    )
    assert first.json() == {device: {"downlinkData": "a101060001000000"}}
    await stack.client.post(path, json={"params": {"led": 0}}, headers=headers)  # waits (rule 4)
    # The device acks seq 1 (led=1) in its next uplink, which asks for a downlink too.
    acking = {"device": device, "time": now + 600, "data": "1001060001", "seqNumber": 301}
    second = await callback(stack, {**acking, "ack": True})
    assert second.json() == {device: {"downlinkData": "a102060000000000"}}

    # The worker decodes that uplink later and its param_ack reaches the ack agent, which must
    # change nothing. To know it got there: a later uplink acks an unknown seq with
    # sample_interval=20, which the agent applies after it (one device: one partition, in order).
    marker = {"device": device, "time": now + 1200, "data": "1009010014", "seqNumber": 302}
    assert (await callback(stack, marker)).status_code == 204

    async def agent_done() -> dict[str, Any] | None:
        body: dict[str, Any] = (await stack.client.get(path, headers=headers)).json()
        return body if body["active"]["sample_interval"] == 20 else None

    state = await eventually(agent_done, timeout=20)
    assert state["active"]["led"] == 1
    assert [(p["value"], p["status"], p["seq"]) for p in state["pending"]] == [(0, "in_flight", 2)]
    listed = await stack.client.get(
        f"/v1/devices/{device}/events", params={"type": "param_acked"}, headers=headers
    )
    assert len(listed.json()["events"]) == 1  # the answer's; the worker left the state as it was
