"""Every way an uplink arrives ends up as readings: Sigfox, TTN and ChirpStack callbacks on the
real API, MQTT through the real ``hivepipe ingest mqtt`` process; the real Faust worker decodes
and stores; the REST API serves the points."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.integration.ingest_support import mqtt_publisher, publish_all, sample, wait_until
from tests.stack import ROOT, Stack, eventually, settings_env

DEVICES = [
    ("1A2B3C", "orbit-t"),
    ("70B3D57ED0000001", "lorawan-lpp"),
    ("70B3D57ED0000002", "lorawan-lpp"),
    ("sensor-1", "json"),
    ("relay-1", "relay-controller"),
]


@pytest.fixture(scope="module")
def mqtt_prefix() -> str:
    return f"e2e{uuid.uuid4().hex[:8]}/devices"


@pytest.fixture(scope="module")
def mqtt_ingest(stack: Stack, mqtt_prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m services.entrypoints.cli ingest mqtt`` with the stack's settings."""
    env = settings_env(stack.settings)
    env["HIVEPIPE_MQTT_TOPIC_PREFIX"] = mqtt_prefix
    env["HIVEPIPE_MQTT_CLIENT_ID"] = f"e2e-{uuid.uuid4().hex[:8]}"
    log = stack.settings.data_dir / "mqtt-ingest.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.entrypoints.cli", "ingest", "mqtt"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: proc.poll() is None and "MQTT subscribed" in log.read_text(), timeout=20)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def _data(stack: Stack, device: str) -> list[tuple[float, str, float, Any]]:
    page = await stack.client.get(
        f"/v1/devices/{device}/data", headers={"X-API-Key": stack.api_key}
    )
    assert page.status_code == 200, page.text
    return sorted((p["time"], p["metric"], p["value"], p["unit"]) for p in page.json()["data"])


async def test_every_source_becomes_readings(
    stack: Stack, mqtt_ingest: subprocess.Popen[bytes], mqtt_prefix: str
) -> None:
    headers = {"X-API-Key": stack.api_key}
    for device, model in DEVICES:
        created = await stack.client.post(
            "/v1/devices", json={"id": device, "model": model}, headers=headers
        )
        assert created.status_code == 201, created.text

    token = {"X-Callback-Token": stack.token}
    answers = [
        await stack.client.post(
            "/callbacks/sigfox", json=sample("sigfox-uplink.json"), headers=token
        ),
        await stack.client.post("/callbacks/ttn", json=sample("ttn-uplink.json"), headers=token),
        await stack.client.post(
            "/callbacks/chirpstack",
            json=sample("chirpstack-up.json"),
            params={"event": "up", "token": stack.token},
        ),
        await stack.client.post(
            "/callbacks/chirpstack",
            json=sample("chirpstack-ack.json"),
            params={"event": "ack"},
            headers=token,
        ),
    ]
    assert [a.status_code for a in answers] == [204, 204, 204, 204], [a.text for a in answers]

    assert stack.settings.mqtt_url
    url = stack.settings.mqtt_url
    measurement = {"time": 1700000000, "values": {"temperature": 21.5, "co2": 412}}

    def publish() -> None:
        with mqtt_publisher(url) as client:
            publish_all(
                client,
                [
                    (f"{mqtt_prefix}/sensor-1/up", orjson.dumps(measurement)),
                    (f"{mqtt_prefix}/relay-1/state", orjson.dumps(sample("relay-state.json"))),
                ],
            )

    await asyncio.to_thread(publish)

    expected = {
        "1A2B3C": [
            (1699999100, "temperature", 23.0, "°C"),
            (1700000000, "temperature", 23.1, "°C"),
        ],
        "70B3D57ED0000001": [
            (1700000000.123, "temperature_3", 27.2, "°C"),
            (1700000000.123, "temperature_5", 25.5, "°C"),
        ],
        "70B3D57ED0000002": [
            (1700000000.101, "temperature_3", 27.2, "°C"),
            (1700000000.101, "temperature_5", 25.5, "°C"),
        ],
        "sensor-1": [
            (1700000000, "co2", 412.0, None),
            (1700000000, "temperature", 21.5, None),
        ],
    }
    for device, points in expected.items():

        async def arrived(device: str = device, count: int = len(points)) -> Any:
            data = await _data(stack, device)
            return data if len(data) >= count else None

        assert await eventually(arrived, timeout=20) == points, device

    async def relays() -> Any:
        answer = await stack.client.get("/v1/devices/relay-1/state?type=relay", headers=headers)
        return answer.json() if answer.status_code == 200 else None

    assert await eventually(relays, timeout=20) == sample("relay-state.json")["Relays"]

    events = await stack.client.get(
        "/v1/devices/70B3D57ED0000002/events?type=downlink_ack", headers=headers
    )
    assert events.status_code == 200, events.text
    [ack] = events.json()["events"]
    assert ack["acknowledged"] is True
    assert ack["fCntDown"] == 7
    assert ack["queueItemId"] == "5e9b7c4c-2d57-4b39-b4d4-1e0b4a8a9c3d"


async def test_the_mqtt_process_stops_gracefully(
    stack: Stack, mqtt_ingest: subprocess.Popen[bytes]
) -> None:
    mqtt_ingest.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(mqtt_ingest.wait, 15) == 0
