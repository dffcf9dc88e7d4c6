"""The walkthrough of docs/api.md, end to end: the real API on a port, the Faust worker as a
child process, the CLI as a child process, a real MQTT subscriber, a real HTTP server standing in
for The Things Stack."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from services.commands.publishing import parse_mqtt_url
from tests.api_support import RecordingServer
from tests.stack import ROOT, Stack, eventually, stack_in_new_schema

RELAY_COMMAND = {
    "payload": {
        "Output": "Relay",
        "Relays": [{"relay": "SecurityAlarm", "state": 1, "id": "255.1"}],
    }
}


@pytest.fixture(scope="module")
def tts() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture(scope="module")
async def stack(
    pg_server: str,
    kafka_server: str,
    mqtt_server: str,
    tmp_path_factory: pytest.TempPathFactory,
    tts: RecordingServer,
) -> AsyncIterator[Stack]:
    async with stack_in_new_schema(
        pg_server,
        kafka=kafka_server,
        mqtt_url=mqtt_server,
        prefix=f"e{uuid.uuid4().hex[:10]}.",
        data_dir=Path(tmp_path_factory.mktemp("api-e2e")),
        # The shipped defaults: the walkthrough shows a 429.
        rate_limit_per_minute=60,
        lorawan_server="tts",
        lorawan_url=tts.url,
        lorawan_api_key="NNSXS.E2E",
        tts_application_id="cold-chain",
        tts_webhook_id="hivepipe",
    ) as running:
        yield running


def hivepipe(stack: Stack, *args: str) -> str:
    """Run the CLI as a user would (a child process); returns its stdout."""
    env = {**os.environ, "HIVEPIPE_DATABASE_URL": stack.settings.database_url or ""}
    done = subprocess.run(
        [sys.executable, "-m", "services.entrypoints.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Subscriber:
    """``mosquitto_sub -t 'devices/+/command'``, with paho."""

    def __init__(self, url: str) -> None:
        address = parse_mqtt_url(url)
        self.messages: queue.Queue[MQTTMessage] = queue.Queue()
        ready: queue.Queue[bool] = queue.Queue()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"e2e-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda *_: ready.put(True)
        self.client.on_connect = lambda client, *_: client.subscribe("devices/+/command", qos=1)
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        ready.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_walkthrough(stack: Stack, tts: RecordingServer) -> None:
    client = stack.client
    tag = uuid.uuid4().hex[:6]
    integrator, user = f"acme-{tag}", f"alice-{tag}"

    # 1. An integrator and its key, with the CLI.
    assert hivepipe(stack, "users", "create", integrator, "--integrator").startswith("created")
    acme = {
        "X-API-Key": hivepipe(
            stack, "keys", "create", "--user", integrator, "--scopes", "admin"
        ).strip()
    }

    # 2. A user of the integrator, a device given to it, a read-only key for it.
    created = await client.post("/v1/users", json={"username": user}, headers=acme)
    assert created.status_code == 201, created.text
    device = f"{int(tag, 16) % 0xFFFFFF:06X}"
    registered = await client.post(
        "/v1/devices",
        json={"id": device, "model": "orbit-t", "name": "cold room", "owner": user},
        headers=acme,
    )
    assert registered.status_code == 201, registered.text
    key = await client.post(
        "/v1/keys", json={"name": "dashboard", "scopes": ["read-only"], "user": user}, headers=acme
    )
    assert key.status_code == 201, key.text
    alice = {"X-API-Key": key.json()["key"]}
    mine = await client.get("/v1/devices", headers=alice)
    assert [d["id"] for d in mine.json()] == [device]
    assert mine.headers["X-RateLimit-Limit"] == "60"

    # 3. The read-only key cannot write: 403.
    denied = await client.post("/v1/devices", json={"id": "ABC", "model": "orbit-t"}, headers=alice)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "missing_scope"

    # 4. Data flows: a Sigfox uplink through the worker, read back in one GraphQL query.
    uplink = {"device": device, "time": 1700000000, "data": "010f08fc0906", "seqNumber": 1}
    answer = await client.post(
        "/callbacks/sigfox", json=uplink, headers={"X-Callback-Token": stack.token}
    )
    assert answer.status_code == 204, answer.text
    query = {"query": "{ devices { id owner readings { metric value time unit } } }"}

    async def readings() -> list[dict[str, Any]] | None:
        body = (await client.post("/graphql", json=query, headers=alice)).json()
        found = body["data"]["devices"][0]["readings"]
        return found or None

    # Polled once a second: the account is under the shipped 60 requests per minute.
    assert await eventually(readings, timeout=30, interval=1.0) == [
        {"metric": "temperature", "value": 23.1, "time": 1700000000.0, "unit": "°C"}
    ]

    # 5. Rate limits: the integrator lowers its account's limit with the CLI; the account
    # (integrator and user together) gets 429 with Retry-After once over it.
    hivepipe(stack, "accounts", "limits", integrator, "--per-minute", "3")
    statuses = [(await client.get("/v1/devices", headers=alice)).status_code for _ in range(4)]
    refused = await client.get("/v1/devices", headers=acme)
    assert statuses[-1] == 429
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == refused.json()["error"]["retry_after"]
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    hivepipe(stack, "accounts", "limits", integrator, "--per-minute", "1000")

    # 6. A relay command reaches a subscribed MQTT client, after the broker's PUBACK.
    relay = f"relay-{tag}"
    assert (
        await client.post(
            "/v1/devices", json={"id": relay, "model": "relay-controller"}, headers=acme
        )
    ).status_code == 201
    subscriber = Subscriber(stack.settings.mqtt_url or "")
    try:
        sent = await client.post(f"/v1/devices/{relay}/commands", json=RELAY_COMMAND, headers=acme)
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"status": "Command sent successfully"}
        deadline = time.monotonic() + 10
        while True:
            message = subscriber.messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if message.topic == f"devices/{relay}/command":
                break
        assert json.loads(message.payload) == RELAY_COMMAND["payload"]
    finally:
        subscriber.close()

    # 7. A LoRaWAN downlink queued on The Things Stack, listed, then cleared.
    dev_eui = f"70B3D57E{int(tag, 16):08X}"
    assert (
        await client.post("/v1/devices", json={"id": dev_eui, "model": "lorawan-lpp"}, headers=acme)
    ).status_code == 201
    tts.reply = (200, {})
    queued = await client.post(
        f"/v1/devices/{dev_eui}/downlinks",
        json={"port": 15, "payload_hex": "0a0b", "confirmed": False},
        headers=acme,
    )
    assert queued.status_code == 201, queued.text
    assert queued.json()["status"] == "queued"
    push = tts.requests[-1]
    assert push.path.endswith(f"/devices/eui-{dev_eui.lower()}/down/push")
    assert push.headers["authorization"] == "Bearer NNSXS.E2E"
    assert push.body == {
        "downlinks": [
            {"frm_payload": "Cgs=", "f_port": 15, "priority": "NORMAL", "confirmed": False}
        ]
    }
    listed = await client.get(f"/v1/devices/{dev_eui}/downlinks", headers=acme)
    assert [d["id"] for d in listed.json()["downlinks"]] == [queued.json()["id"]]
    cleared = await client.delete(f"/v1/devices/{dev_eui}/downlinks", headers=acme)
    assert cleared.json() == {"cleared": 1}
    assert tts.requests[-1].path.endswith("/down/replace")

    # 8. Usage: the account's requests, per user and day.
    usage = await client.get("/v1/usage", headers=acme)
    assert usage.status_code == 200
    per_user = {row["user"]: row["api_requests"] for row in usage.json()["usage"]}
    assert per_user[user] >= 5
    assert per_user[integrator] >= 5

    # 9. Revoking the user's key is effective on the next request.
    assert (
        await client.post(f"/v1/keys/dashboard/revoke?user={user}", headers=acme)
    ).status_code == 200
    assert (await client.get("/v1/devices", headers=alice)).status_code == 401
