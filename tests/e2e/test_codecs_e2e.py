"""Device models with JavaScript codecs end to end (issue #17): a user registers a vendor codec
through the API, tests it with the decode route, registers devices of that model, and their TTN
and ChirpStack uplinks are decoded by the real worker, stored, served and pushed to a webhook.
Hostile codecs fail only their own uplinks (``decode_error`` events), never the others'."""

from __future__ import annotations

import asyncio
import base64
import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.api_support import Account, make_account
from tests.samples import sample
from tests.servers import http_receiver
from tests.stack import Stack, eventually
from tests.unit.test_codecs_vendor import vendor_codec

WHEN = "2023-11-14T22:13:20Z"  # 1700000000


@pytest.fixture(scope="module")
async def owner(stack: Stack) -> Account:
    assert stack.settings.database_url
    return await make_account(stack.settings.database_url, f"codec-{uuid.uuid4().hex[:6]}")


class Pushed:
    """A webhook receiver that keeps every pushed body."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read()))
        return web.Response(status=204)

    def points(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def walk(value: Any) -> None:
            if isinstance(value, dict) and "metric" in value:
                found.append(value)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self.bodies)
        return found


@pytest.fixture(scope="module")
async def pushed() -> AsyncIterator[Pushed]:
    state = Pushed()
    async with http_receiver(state.handle) as port:
        state.port = port
        yield state


def dev_eui() -> str:
    return f"A840{uuid.uuid4().hex[:12].upper()}"


def ttn_uplink(device: str, payload: bytes, port: int) -> dict[str, Any]:
    body = copy.deepcopy(sample("ttn-uplink.json"))
    body["end_device_ids"]["dev_eui"] = device
    body["end_device_ids"]["device_id"] = device.lower()
    body["received_at"] = WHEN
    body["uplink_message"]["f_port"] = port
    body["uplink_message"]["frm_payload"] = base64.b64encode(payload).decode()
    body["correlation_ids"] = [f"as:up:{uuid.uuid4().hex}"]
    return dict(body)


def chirpstack_uplink(device: str, payload: bytes, port: int, second: int = 0) -> dict[str, Any]:
    body = copy.deepcopy(sample("chirpstack-up.json"))
    body["deviceInfo"]["devEui"] = device.lower()
    body["deduplicationId"] = str(uuid.uuid4())
    body["time"] = f"2023-11-14T22:13:{20 + second:02d}+00:00"
    body["fPort"] = port
    body["fCnt"] = second
    body["data"] = base64.b64encode(payload).decode()
    return dict(body)


async def send_ttn(stack: Stack, body: dict[str, Any]) -> None:
    answer = await stack.client.post(
        "/callbacks/ttn", json=body, headers={"X-Callback-Token": stack.token}
    )
    assert answer.status_code == 204, answer.text


async def send_chirpstack(stack: Stack, body: dict[str, Any]) -> None:
    answer = await stack.client.post(
        "/callbacks/chirpstack", json=body, params={"event": "up", "token": stack.token}
    )
    assert answer.status_code == 204, answer.text


async def register(stack: Stack, owner: Account, model_id: str, source: str) -> None:
    created = await stack.client.post(
        "/v1/models",
        json={"id": model_id, "network": "lorawan", "codec": {"source": source}},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text


async def new_device(stack: Stack, owner: Account, model: str) -> str:
    device = dev_eui()
    created = await stack.client.post(
        "/v1/devices", json={"id": device, "model": model}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    return device


async def points_of(stack: Stack, owner: Account, device: str, count: int) -> Any:
    async def arrived() -> Any:
        page = await stack.client.get(f"/v1/devices/{device}/data", headers=owner.headers)
        assert page.status_code == 200, page.text
        data = page.json()["data"]
        return data if len(data) >= count else None

    found = await eventually(arrived, timeout=30)
    return sorted((p["time"], p["metric"], p["value"], p["unit"]) for p in found)


async def events_of(stack: Stack, owner: Account, device: str, kind: str, count: int) -> Any:
    async def arrived() -> Any:
        page = await stack.client.get(
            f"/v1/devices/{device}/events", params={"type": kind}, headers=owner.headers
        )
        assert page.status_code == 200, page.text
        events = page.json()["events"]
        return events if len(events) >= count else None

    return await eventually(arrived, timeout=30)


async def test_a_vendor_codec_from_registration_to_stored_and_pushed_points(
    stack: Stack, owner: Account, pushed: Pushed
) -> None:
    source, spec = vendor_codec("milesight-em300-th")
    example = spec["uplinkDecoder"]["examples"][0]
    payload, port = bytes(example["input"]["bytes"]), example["input"]["fPort"]
    await register(stack, owner, "em300-th", source)

    tested = await stack.client.post(
        "/v1/models/em300-th/decode",
        json={"payload_hex": payload.hex(), "port": port},
        headers=owner.headers,
    )
    assert tested.status_code == 200, tested.text
    assert tested.json()["data"] == example["output"]["data"]

    via_ttn = await new_device(stack, owner, "em300-th")
    via_chirpstack = await new_device(stack, owner, "em300-th")
    hook = await stack.client.post(
        f"/v1/devices/{via_ttn}/webhooks",
        json={"url": f"http://127.0.0.1:{pushed.port}/ok/{via_ttn}"},
        headers=owner.headers,
    )
    assert hook.status_code == 201, hook.text

    await send_ttn(stack, ttn_uplink(via_ttn, payload, port))
    await send_chirpstack(stack, chirpstack_uplink(via_chirpstack, payload, port))

    expected = [
        (1700000000, "air.relativeHumidity", 30.0, "%"),
        (1700000000, "air.temperature", 20.0, "°C"),
        (1700000000, "battery", 50.0, "V"),
    ]
    assert await points_of(stack, owner, via_ttn, 3) == expected
    stored = await points_of(stack, owner, via_chirpstack, 3)
    assert [(m, v, u) for _, m, v, u in stored] == [(m, v, u) for _, m, v, u in expected]

    async def delivered() -> Any:
        mine = [p for p in pushed.points() if p.get("device") == via_ttn]
        return mine if len(mine) >= 3 else None

    webhook_points = await eventually(delivered, timeout=30)
    assert sorted((p["metric"], p["value"], p["unit"]) for p in webhook_points) == [
        (m, v, u) for _, m, v, u in expected
    ]

    state = await stack.client.get(f"/v1/devices/{via_ttn}/state", headers=owner.headers)
    assert state.status_code == 200, state.text
    assert state.json() == example["output"]["data"]
    [decoded] = await events_of(stack, owner, via_ttn, "decoded", 1)
    assert decoded["data"] == example["output"]["data"]
    assert decoded["normalized"] == {
        "air": {"temperature": 20.0, "relativeHumidity": 30.0},
        "battery": 50,
    }


async def test_a_put_is_used_by_the_uplinks_decoded_after_it(stack: Stack, owner: Account) -> None:
    await register(
        stack, owner, "versioned", "function decodeUplink(i) { return {data: {v1: 1}}; }"
    )
    device = await new_device(stack, owner, "versioned")
    await send_chirpstack(stack, chirpstack_uplink(device, b"\x01", 1, second=0))
    assert [m for _, m, _, _ in await points_of(stack, owner, device, 1)] == ["v1"]
    replaced = await stack.client.put(
        "/v1/models/versioned",
        json={
            "network": "lorawan",
            "codec": {"source": "const decodeUplink = (i) => ({data: {v2: i.bytes[0]}});"},
        },
        headers=owner.headers,
    )
    assert replaced.status_code == 200, replaced.text
    await send_chirpstack(stack, chirpstack_uplink(device, b"\x07", 1, second=1))
    points = await points_of(stack, owner, device, 2)
    assert [(m, v) for _, m, v, _ in points] == [("v1", 1.0), ("v2", 7.0)]


HOSTILE = """
function decodeUplink(input) {
  switch (input.bytes[0]) {
    case 1: while (true) {}
    case 2: var a = []; while (true) { a.push(new Array(100000).fill(1)); }
    case 3: return {data: {x: null.y}};
    case 4: return "not an object";
    case 5: var s = "x"; for (var i = 0; i < 20; i++) { s += s; } return {data: {s: s}};
    default: return {data: {fine: input.bytes[0]}};
  }
}
"""


async def test_hostile_codecs_fail_only_their_own_uplinks(stack: Stack, owner: Account) -> None:
    lht65, spec = vendor_codec("dragino-lht65")
    good_example = spec["uplinkDecoder"]["examples"][0]
    await register(stack, owner, "lht65", lht65)
    await register(stack, owner, "hostile", HOSTILE)
    good = await new_device(stack, owner, "lht65")
    bad = {kind: await new_device(stack, owner, "hostile") for kind in range(1, 6)}

    good_payload = bytes(good_example["input"]["bytes"])
    sends = []
    for second, (kind, device) in enumerate(bad.items()):
        sends.append(send_chirpstack(stack, chirpstack_uplink(device, bytes([kind]), 1, second)))
        sends.append(send_chirpstack(stack, chirpstack_uplink(good, good_payload, 2, second)))
    await asyncio.gather(*sends)

    numbers = {
        k: v for k, v in good_example["output"]["data"].items() if isinstance(v, int | float)
    }
    stored = await points_of(stack, owner, good, len(numbers) * len(bad))
    assert {(m, v) for _, m, v, _ in stored} == set(numbers.items())
    assert len(stored) == len(numbers) * len(bad)

    reasons = {}
    for kind, device in bad.items():
        [event] = await events_of(stack, owner, device, "decode_error", 1)
        reasons[kind] = event["reason"]
        assert (
            event["payload_hex"] == f"{kind:02X}" or event["payload_hex"].upper() == f"{kind:02X}"
        )
    assert reasons[1] == "codec_timeout"
    assert reasons[2] in ("codec_memory", "codec_timeout")  # whichever limit comes first
    assert reasons[3].startswith("codec_exception: TypeError")
    assert reasons[4].startswith("codec_result")
    assert reasons[5].startswith("codec_result: the output is too large")

    async def flagged() -> Any:
        model = (await stack.client.get("/v1/models/hostile", headers=owner.headers)).json()
        return model if model["last_error"] else None

    model = await eventually(flagged, timeout=30)
    assert model["failing_since"] is not None
