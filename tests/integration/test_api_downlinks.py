"""LoRaWAN downlinks through the real API to a real HTTP server standing in for TTS/ChirpStack:
the exact requests, the recorded answers, the failures."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from services.entrypoints import embedded
from services.platform.kafka import ensure_topics
from tests.api_support import (
    Account,
    Api,
    RecordingServer,
    api_on_new_schema,
    command_records,
    make_account,
    running_api,
)
from tests.samples import sample

DEV_EUI = "70B3D57ED0000002"
TTS_KEY = "NNSXS.TESTKEY"
CS_KEY = "chirpstack-test-key"


@pytest.fixture(scope="module")
def network_server() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture(scope="module")
async def tts(
    pg_server: str,
    kafka_server: str,
    tmp_path_factory: pytest.TempPathFactory,
    network_server: RecordingServer,
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server,
        kafka=kafka_server,
        data_dir=tmp_path_factory.mktemp("downlinks"),
        lorawan_server="tts",
        lorawan_url=network_server.url + "/",
        lorawan_api_key=TTS_KEY,
        tts_application_id="cold-chain",
        tts_webhook_id="hivepipe",
    ) as running:
        await ensure_topics(kafka_server, [running.settings.topic("commands")], 2)
        yield running


@pytest.fixture
async def owner(tts: Api, network_server: RecordingServer) -> Account:
    network_server.requests.clear()
    network_server.reply = (200, {})
    account = await make_account(tts.database_url)
    dev_eui = f"{account.user_id:016X}"
    created = await tts.client.post(
        "/v1/devices", json={"id": dev_eui, "model": "lorawan-lpp"}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    return account


def _dev_eui(account: Account) -> str:
    return f"{account.user_id:016X}"


async def test_tts_push_exact_request_and_recorded_answer(
    tts: Api, owner: Account, network_server: RecordingServer
) -> None:
    dev_eui = _dev_eui(owner)
    network_server.reply = (200, {"correlation_ids": ["as:downlink:1"]})
    answer = await tts.client.post(
        f"/v1/devices/{dev_eui.lower()}/downlinks",
        json={"port": 15, "payload_hex": "a1b2c3", "confirmed": True},
        headers=owner.headers,
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["device"] == dev_eui
    assert body["port"] == 15
    assert body["payload_hex"] == "A1B2C3"
    assert body["confirmed"] is True
    assert body["status"] == "queued"
    assert body["network_server"] == "tts"
    assert body["answer"] == {"status": 200, "body": {"correlation_ids": ["as:downlink:1"]}}
    [request] = network_server.requests
    assert request.method == "POST"
    assert request.path == (
        "/api/v3/as/applications/cold-chain/webhooks/hivepipe/devices/"
        f"eui-{dev_eui.lower()}/down/push"
    )
    assert request.headers["authorization"] == f"Bearer {TTS_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "downlinks": [
            {
                "frm_payload": base64.b64encode(bytes.fromhex("a1b2c3")).decode(),
                "f_port": 15,
                "priority": "NORMAL",
                "confirmed": True,
            }
        ]
    }
    listing = await tts.client.get(f"/v1/devices/{dev_eui}/downlinks", headers=owner.headers)
    assert listing.status_code == 200
    assert listing.json() == {"downlinks": [body]}
    records = await command_records(tts, dev_eui)
    assert [r["kind"] for r in records] == ["downlink"]
    assert records[0]["payload"] == {
        "id": body["id"],
        "port": 15,
        "payload_hex": "A1B2C3",
        "confirmed": True,
    }
    assert records[0]["outcome"]["status"] == "queued"
    assert records[0]["outcome"]["answer"]["status"] == 200


async def test_tts_clear_replaces_the_queue_with_nothing(
    tts: Api, owner: Account, network_server: RecordingServer
) -> None:
    dev_eui = _dev_eui(owner)
    for payload in ("01", "02"):
        queued = await tts.client.post(
            f"/v1/devices/{dev_eui}/downlinks",
            json={"port": 1, "payload_hex": payload},
            headers=owner.headers,
        )
        assert queued.status_code == 201
    network_server.requests.clear()
    cleared = await tts.client.delete(f"/v1/devices/{dev_eui}/downlinks", headers=owner.headers)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json() == {"cleared": 2}
    [request] = network_server.requests
    assert request.method == "POST"
    assert request.path.endswith(f"/devices/eui-{dev_eui.lower()}/down/replace")
    assert request.body == {"downlinks": []}
    listing = await tts.client.get(f"/v1/devices/{dev_eui}/downlinks", headers=owner.headers)
    assert {d["status"] for d in listing.json()["downlinks"]} == {"cleared"}
    records = await command_records(tts, dev_eui)  # each checked against the topic's schema
    assert [r["kind"] for r in records] == ["downlink", "downlink", "downlink_clear"]
    assert records[-1]["outcome"]["status"] == "cleared"


async def test_network_server_errors_are_recorded_and_reported(
    tts: Api, owner: Account, network_server: RecordingServer
) -> None:
    dev_eui = _dev_eui(owner)
    network_server.reply = (500, {"message": "boom"})
    failed = await tts.client.post(
        f"/v1/devices/{dev_eui}/downlinks",
        json={"port": 2, "payload_hex": "00"},
        headers=owner.headers,
    )
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "network_server_unavailable"
    network_server.reply = (404, {"message": "device not found"})
    refused = await tts.client.post(
        f"/v1/devices/{dev_eui}/downlinks",
        json={"port": 2, "payload_hex": "01"},
        headers=owner.headers,
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "network_server_refused"
    listing = await tts.client.get(f"/v1/devices/{dev_eui}/downlinks", headers=owner.headers)
    answers = [(d["status"], d["answer"]) for d in listing.json()["downlinks"]]
    assert answers == [
        ("failed", {"status": 404, "body": {"message": "device not found"}}),
        ("failed", {"status": 500, "body": {"message": "boom"}}),
    ]


async def test_invalid_downlinks(tts: Api, owner: Account) -> None:
    dev_eui = _dev_eui(owner)
    for body in (
        {"port": 0, "payload_hex": "00"},
        {"port": 224, "payload_hex": "00"},
        {"port": 1, "payload_hex": "0"},
        {"port": 1, "payload_hex": "zz"},
        {"port": 1, "payload_hex": ""},
        {"port": 1, "payload_hex": "00" * 243},
        {"payload_hex": "00"},
    ):
        answer = await tts.client.post(
            f"/v1/devices/{dev_eui}/downlinks", json=body, headers=owner.headers
        )
        assert answer.status_code == 422, body
    mqtt = await tts.client.post(
        "/v1/devices", json={"id": f"m{owner.user_id}", "model": "json"}, headers=owner.headers
    )
    assert mqtt.status_code == 201
    not_lorawan = await tts.client.post(
        f"/v1/devices/m{owner.user_id}/downlinks",
        json={"port": 1, "payload_hex": "00"},
        headers=owner.headers,
    )
    assert not_lorawan.status_code == 422
    assert not_lorawan.json()["error"]["code"] == "not_lorawan"
    stranger = await make_account(tts.database_url)
    for method in ("GET", "DELETE", "POST"):
        answer = await tts.client.request(
            method,
            f"/v1/devices/{dev_eui}/downlinks",
            json={"port": 1, "payload_hex": "00"} if method == "POST" else None,
            headers=stranger.headers,
        )
        assert answer.status_code == 404, method


@asynccontextmanager
async def chirpstack_api(
    tts: Api, network_server: RecordingServer
) -> AsyncIterator[tuple[Api, Account, str]]:
    """The API of ``tts``'s database with ChirpStack as its network server, an account, and a
    ``lorawan-lpp`` device of that account (its DevEUI)."""
    settings = tts.settings.model_copy(
        update={
            "lorawan_server": "chirpstack",
            "lorawan_url": network_server.url,
            "lorawan_api_key": SecretStr(CS_KEY),
        }
    )
    async with running_api(settings) as cs:
        account = await make_account(cs.database_url)
        dev_eui = f"{account.user_id:016X}"
        created = await cs.client.post(
            "/v1/devices", json={"id": dev_eui, "model": "lorawan-lpp"}, headers=account.headers
        )
        assert created.status_code == 201, created.text
        yield cs, account, dev_eui


async def test_chirpstack_push_and_flush(tts: Api, network_server: RecordingServer) -> None:
    async with chirpstack_api(tts, network_server) as (cs, account, dev_eui):
        network_server.requests.clear()
        network_server.reply = (200, {"id": "5e9b7c4c-2d57-4b39-b4d4-1e0b4a8a9c3d"})
        queued = await cs.client.post(
            f"/v1/devices/{dev_eui}/downlinks",
            json={"port": 10, "payload_hex": "0102"},
            headers=account.headers,
        )
        assert queued.status_code == 201, queued.text
        assert queued.json()["network_server"] == "chirpstack"
        assert queued.json()["answer"]["body"] == {"id": "5e9b7c4c-2d57-4b39-b4d4-1e0b4a8a9c3d"}
        network_server.reply = (200, {})
        flushed = await cs.client.delete(
            f"/v1/devices/{dev_eui}/downlinks", headers=account.headers
        )
        assert flushed.status_code == 200
        push, flush = network_server.requests
        assert push.method == "POST"
        assert push.path == f"/api/devices/{dev_eui.lower()}/queue"
        assert push.headers["grpc-metadata-authorization"] == f"Bearer {CS_KEY}"
        assert "authorization" not in push.headers
        assert push.body == {"queueItem": {"confirmed": False, "fPort": 10, "data": "AQI="}}
        assert flush.method == "DELETE"
        assert flush.path == f"/api/devices/{dev_eui.lower()}/queue"
        assert flush.headers["grpc-metadata-authorization"] == f"Bearer {CS_KEY}"


async def test_chirpstack_reports_update_the_stored_downlink(
    tts: Api, network_server: RecordingServer
) -> None:
    async with chirpstack_api(tts, network_server) as (cs, account, dev_eui):
        items = [str(uuid.uuid4()) for _ in range(2)]
        for item in items:
            network_server.reply = (200, {"id": item})
            queued = await cs.client.post(
                f"/v1/devices/{dev_eui}/downlinks",
                json={"port": 10, "payload_hex": "0102", "confirmed": True},
                headers=account.headers,
            )
            assert queued.status_code == 201, queued.text

        async def report(event: str, item: str, **fields: Any) -> None:
            body = {
                **sample("chirpstack-ack.json"),
                "deduplicationId": str(uuid.uuid4()),
                "deviceInfo": {"devEui": dev_eui.lower(), "deviceName": "n"},
                "queueItemId": item,
                **fields,
            }
            answer = await cs.client.post(
                "/callbacks/chirpstack",
                params={"event": event},
                json=body,
                headers={"X-Callback-Token": cs.settings.token},
            )
            assert answer.status_code == 204, answer.text

        async def statuses() -> list[str]:
            listing = await cs.client.get(
                f"/v1/devices/{dev_eui}/downlinks", headers=account.headers
            )
            return [d["status"] for d in reversed(listing.json()["downlinks"])]

        assert await statuses() == ["queued", "queued"]
        await report("txack", items[0])
        assert await statuses() == ["sent", "queued"]
        await report("ack", items[0], acknowledged=True)
        await report("ack", items[1], acknowledged=False)  # without a txack seen first
        assert await statuses() == ["acknowledged", "nacked"]
        # A late txack does not undo an ack; a report naming no stored item changes nothing.
        await report("txack", items[0])
        await report("ack", str(uuid.uuid4()), acknowledged=True)
        assert await statuses() == ["acknowledged", "nacked"]


async def test_unreachable_or_unconfigured_network_server_is_503(tts: Api) -> None:
    dead = tts.settings.model_copy(
        update={"lorawan_url": f"http://127.0.0.1:{embedded.free_port()}"}
    )
    none = tts.settings.model_copy(update={"lorawan_server": None})
    for settings, code in (
        (dead, "network_server_unavailable"),
        (none, "network_server_unavailable"),
    ):
        async with running_api(settings) as api:
            account = await make_account(api.database_url)
            dev_eui = f"{account.user_id:016X}"
            await api.client.post(
                "/v1/devices", json={"id": dev_eui, "model": "lorawan-lpp"}, headers=account.headers
            )
            started = time.monotonic()
            answer = await api.client.post(
                f"/v1/devices/{dev_eui}/downlinks",
                json={"port": 1, "payload_hex": "00"},
                headers=account.headers,
            )
            assert time.monotonic() - started < settings.command_timeout + 1
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == code
            assert "127.0.0.1" not in answer.text  # no internals in the message


async def test_data_is_encoded_by_the_models_encode_downlink(
    tts: Api, network_server: RecordingServer
) -> None:
    """Issue #17: ``{"data": ...}`` instead of ``payload_hex`` for a model with encodeDownlink
    (the Device Repository's example wind sensor codec)."""
    from tests.unit.test_codecs_vendor import vendor_codec

    account = await make_account(tts.database_url)
    network_server.requests.clear()
    network_server.reply = (200, {})
    source, spec = vendor_codec("example-windsensor")
    model = await tts.client.post(
        "/v1/models",
        json={"id": "wind", "network": "lorawan", "codec": {"source": source}},
        headers=account.headers,
    )
    assert model.status_code == 201, model.text
    dev_eui = f"{account.user_id:016X}"
    created = await tts.client.post(
        "/v1/devices", json={"id": dev_eui, "model": "wind"}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    example = spec["downlinkEncoder"]["examples"][0]
    answer = await tts.client.post(
        f"/v1/devices/{dev_eui}/downlinks",
        json={"data": example["input"]["data"]},
        headers=account.headers,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["port"] == example["output"]["fPort"]
    assert bytes.fromhex(answer.json()["payload_hex"]) == bytes(example["output"]["bytes"])
    [request] = network_server.requests
    assert (
        request.body["downlinks"][0]["frm_payload"]
        == base64.b64encode(bytes(example["output"]["bytes"])).decode()
    )
    refused = await tts.client.post(
        f"/v1/devices/{dev_eui}/downlinks",
        json={"data": {"led": "blue"}},
        headers=account.headers,
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "codec_error")
    both = await tts.client.post(
        f"/v1/devices/{dev_eui}/downlinks",
        json={"data": {"led": "red"}, "payload_hex": "01", "port": 2},
        headers=account.headers,
    )
    assert both.status_code == 422
    lpp = f"{account.user_id + 10**9:016X}"
    await tts.client.post(
        "/v1/devices", json={"id": lpp, "model": "lorawan-lpp"}, headers=account.headers
    )
    no_encoder = await tts.client.post(
        f"/v1/devices/{lpp}/downlinks", json={"data": {"x": 1}}, headers=account.headers
    )
    assert (no_encoder.status_code, no_encoder.json()["error"]["code"]) == (422, "no_encoder")
