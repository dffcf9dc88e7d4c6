"""The network callbacks over real HTTP, with real Kafka and PostgreSQL behind the real API.

Every wire format with its exact field names (the shared samples), the contract's errors, the
deduplication (duplicate storms), unknown devices kept on dead-letter, device events, and
hypothesis feeding random bodies to every callback (never a 500; valid uplinks all reach Kafka).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.platform.settings import Settings
from tests.api_support import api_on_new_schema
from tests.conftest import drop_schema, new_schema
from tests.integration.ingest_support import (
    api_server,
    metric,
    prepare,
    read_topic,
    register_devices,
    sample,
    wait_for_messages,
)
from tests.schemas import check as check_schema
from tests.stack import stack_settings

SIGFOX = "1A2B3C"
SIGFOX_OFF = "DEAD01"
SIGFOX_PROP = "5A5A5A"  # the property test's own device
TTN_EUI = "70B3D57ED0000001"
CS_EUI = "70B3D57ED0000002"
LPP_HEX = "03670110056700ff"


@dataclass
class Ingest:
    settings: Settings
    client: httpx.Client

    @property
    def kafka(self) -> str:
        assert self.settings.kafka
        return self.settings.kafka

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def post(
        self,
        path: str,
        body: Any,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        headers = {"X-Callback-Token": self.settings.token if token is None else token}
        if token == "":
            headers = {}
        content = raw if raw is not None else json.dumps(body).encode()
        return self.client.post(
            path,
            content=content,
            headers={**headers, "Content-Type": "application/json"},
            params=params,
        )

    def messages(self, topic: str) -> list[dict[str, Any]]:
        return read_topic(self.kafka, self.topic(topic))

    def events(self, device: str) -> list[dict[str, Any]]:
        assert self.settings.database_url
        with psycopg.connect(self.settings.database_url, row_factory=psycopg.rows.dict_row) as c:
            return c.execute(
                "SELECT type, data, time FROM device_events WHERE device = %s ORDER BY id",
                (device,),
            ).fetchall()


@pytest.fixture(scope="module")
def ingest(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ingest]:
    name, url = new_schema(pg_server)
    s = stack_settings(
        database_url=url,
        kafka=kafka_server,
        mqtt_url=None,
        prefix=f"i{uuid.uuid4().hex[:10]}.",
        data_dir=Path(tmp_path_factory.mktemp("ingest")),
    )
    prepare(s)
    register_devices(
        url,
        [
            (SIGFOX, "orbit-t", True),
            (SIGFOX_OFF, "orbit-t", False),
            (SIGFOX_PROP, "orbit-t", True),
            (TTN_EUI, "lorawan-lpp", True),
            (CS_EUI, "lorawan-lpp", True),
        ],
    )
    with api_server(s) as base, httpx.Client(base_url=base, timeout=20) as client:
        yield Ingest(s, client)
    drop_schema(pg_server, name)


def _ttn(f_cnt: int | None = None, **changes: Any) -> dict[str, Any]:
    body = sample("ttn-uplink.json")
    if f_cnt is not None:
        body["uplink_message"]["f_cnt"] = f_cnt
    body.update(changes)
    return body


# -- every wire format, exact field names ------------------------------------------------------


def test_sigfox_sample_becomes_one_envelope(ingest: Ingest) -> None:
    body = {**sample("sigfox-uplink.json"), "seqNumber": 101}
    answer = ingest.post("/callbacks/sigfox", body)
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    [envelope] = wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["source"] == "sigfox" and v["meta"].get("seq") == 101,
    )
    assert {k: v for k, v in envelope.items() if k != "id"} == {
        "source": "sigfox",
        "device": SIGFOX,
        "received": 1700000000.0,
        "payload_hex": "010f08fc0906",
        "payload_json": None,
        "meta": {
            "seq": 101,
            "station": "0A1B",
            "rssi": -121.5,
            "snr": 12.3,
            "device_type": "5f1a2b3c4d5e6f7a8b9c0d1e",
        },
        "downlink_requested": False,
    }
    assert len(envelope["id"]) == 32


def test_sigfox_quoted_values_are_accepted(ingest: Ingest) -> None:
    body = {**sample("sigfox-downlink-request-quoted.json"), "seqNumber": "102"}
    answer = ingest.post("/callbacks/sigfox", body)
    # No downlink planner is wired in this app: 204 (the Orbit planner answers 200 or 204).
    assert answer.status_code == 204, answer.text
    [envelope] = wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["source"] == "sigfox" and v["meta"].get("seq") == 102,
    )
    assert envelope["device"] == SIGFOX  # "1a2b3c" upper-cased
    assert envelope["received"] == 1700000600.0
    assert envelope["payload_hex"] == "010f08fc"
    assert envelope["downlink_requested"] is True


def test_ttn_sample_becomes_one_envelope(ingest: Ingest) -> None:
    answer = ingest.post("/callbacks/ttn", sample("ttn-uplink.json"))
    assert answer.status_code == 204, answer.text
    [envelope] = wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["source"] == "ttn" and v["meta"]["f_cnt"] == 0,
    )
    assert envelope["device"] == TTN_EUI
    assert envelope["received"] == 1700000000.123
    assert envelope["payload_hex"] == LPP_HEX
    assert envelope["meta"] == {
        "f_cnt": 0,  # absent in the message: it was 0
        "f_port": 1,
        "gateway": "gw-roof",
        "rssi": -87.0,
        "snr": 9.25,
        "gateways": 1,
        "device_id": "lpp-node-1",
        "dev_addr": "260B1234",
        "application_id": "cold-chain",
    }


def test_chirpstack_sample_becomes_one_envelope(ingest: Ingest) -> None:
    answer = ingest.post(
        "/callbacks/chirpstack", sample("chirpstack-up.json"), params={"event": "up"}
    )
    assert answer.status_code == 204, answer.text
    [envelope] = wait_for_messages(
        ingest.kafka, ingest.topic("uplinks"), lambda v: v["source"] == "chirpstack"
    )
    assert envelope["device"] == CS_EUI
    assert envelope["received"] == 1700000000.101
    assert envelope["payload_hex"] == LPP_HEX
    assert envelope["meta"]["f_cnt"] == 10
    assert envelope["meta"]["f_port"] == 1
    assert envelope["meta"]["gateway"] == "0016c001f153a14c"
    assert envelope["meta"]["deduplication_id"] == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"


def test_chirpstack_ack_is_a_stored_and_published_device_event(ingest: Ingest) -> None:
    body = sample("chirpstack-ack.json")
    for _ in range(2):  # the second is a duplicate: stored and published once
        answer = ingest.post("/callbacks/chirpstack", body, params={"event": "ack"})
        assert answer.status_code == 204, answer.text
    [event] = wait_for_messages(
        ingest.kafka,
        ingest.topic("device-events"),
        lambda v: v["device"] == CS_EUI and v["type"] == "downlink_ack",
    )
    assert event == {
        "device": CS_EUI,
        "time": 1700000101.0,
        "type": "downlink_ack",
        "source": "chirpstack",
        "acknowledged": True,
        "fCntDown": 7,
        "queueItemId": "5e9b7c4c-2d57-4b39-b4d4-1e0b4a8a9c3d",
    }
    [stored] = [e for e in ingest.events(CS_EUI) if e["type"] == "downlink_ack"]
    assert stored["data"]["fCntDown"] == 7
    assert stored["time"].timestamp() == 1700000101.0


def test_chirpstack_txack_and_nack(ingest: Ingest) -> None:
    base = sample("chirpstack-ack.json")
    nack = {**base, "acknowledged": False, "fCntDown": 8}
    txack = {**base, "fCntDown": 9, "gatewayId": "0016c001f153a14c", "downlinkId": 42}
    del txack["acknowledged"]
    assert ingest.post("/callbacks/chirpstack", nack, params={"event": "ack"}).status_code == 204
    assert ingest.post("/callbacks/chirpstack", txack, params={"event": "txack"}).status_code == 204
    types = {(e["type"], e["data"]["fCntDown"]) for e in ingest.events(CS_EUI)}
    assert ("downlink_nack", 8) in types
    assert ("downlink_sent_ns", 9) in types


TTN_DOWNLINK = {
    "f_port": 15,
    "f_cnt": 3,
    "frm_payload": "AQI=",
    "confirmed": True,
    "priority": "NORMAL",
    "correlation_ids": ["as:downlink:01HF0000000000000000000001"],
}


@pytest.mark.parametrize(
    ("message", "value", "event_type"),
    [
        ("downlink_ack", TTN_DOWNLINK, "downlink_ack"),
        ("downlink_nack", TTN_DOWNLINK, "downlink_nack"),
        ("downlink_sent", TTN_DOWNLINK, "downlink_sent_ns"),
        ("downlink_queued", TTN_DOWNLINK, "downlink_queued"),
        (
            "downlink_failed",
            {"downlink": TTN_DOWNLINK, "error": {"namespace": "pkg/ns", "name": "no_path"}},
            "downlink_failed",
        ),
    ],
)
def test_ttn_downlink_messages_are_device_events(
    ingest: Ingest, message: str, value: dict[str, Any], event_type: str
) -> None:
    body = {
        "end_device_ids": sample("ttn-uplink.json")["end_device_ids"],
        "correlation_ids": [f"as:up:{message}"],
        "received_at": "2023-11-14T22:20:00.5Z",
        message: value,
    }
    answer = ingest.post("/callbacks/ttn", body)
    assert answer.status_code == 204, answer.text
    [event] = wait_for_messages(
        ingest.kafka,
        ingest.topic("device-events"),
        lambda v: v["device"] == TTN_EUI and v["type"] == event_type,
    )
    assert event["time"] == 1700000400.5
    assert event["source"] == "ttn"
    assert event["f_cnt"] == 3
    assert event["f_port"] == 15
    assert event["correlation_ids"] == ["as:downlink:01HF0000000000000000000001"]
    if message == "downlink_failed":
        assert event["error"] == {"namespace": "pkg/ns", "name": "no_path"}
    assert any(e["type"] == event_type for e in ingest.events(TTN_EUI))


def test_other_messages_are_accepted_and_counted(ingest: Ingest) -> None:
    ids = sample("ttn-uplink.json")["end_device_ids"]
    before = metric("hivepipe_callback_events_total", source="ttn", type="join_accept")
    join = {"end_device_ids": ids, "join_accept": {"session_key_id": "AXBSH1Pk6Z0G166"}}
    assert ingest.post("/callbacks/ttn", join).status_code == 204
    assert metric("hivepipe_callback_events_total", source="ttn", type="join_accept") == before + 1
    unknown = {"end_device_ids": ids, "something_new": {}}
    assert ingest.post("/callbacks/ttn", unknown).status_code == 204
    assert metric("hivepipe_callback_events_total", source="ttn", type="unknown") >= 1

    status = {"deviceInfo": {"devEui": CS_EUI}, "batteryLevel": 80.5, "margin": 7}
    for event in ("join", "status", "log", "location", "integration", "future-event"):
        label = event if event != "future-event" else "unknown"
        before = metric("hivepipe_callback_events_total", source="chirpstack", type=label)
        answer = ingest.post("/callbacks/chirpstack", status, params={"event": event})
        assert answer.status_code == 204, (event, answer.text)
        after = metric("hivepipe_callback_events_total", source="chirpstack", type=label)
        assert after == before + 1


# -- authentication and bad input ---------------------------------------------------------------

ENDPOINTS = [
    ("/callbacks/sigfox", "sigfox-uplink.json", {}),
    ("/callbacks/ttn", "ttn-uplink.json", {}),
    ("/callbacks/chirpstack", "chirpstack-up.json", {"event": "up"}),
]


@pytest.mark.parametrize(("path", "name", "params"), ENDPOINTS)
def test_token_is_required(ingest: Ingest, path: str, name: str, params: dict[str, str]) -> None:
    for token in ("", "wrong-token", ingest.settings.token + "x"):
        answer = ingest.post(path, sample(name), token=token, params=params)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_callback_token"


def test_token_may_be_a_query_parameter(ingest: Ingest) -> None:
    body = {**sample("sigfox-uplink.json"), "seqNumber": 103}
    answer = ingest.post(
        "/callbacks/sigfox", body, token="", params={"token": ingest.settings.token}
    )
    assert answer.status_code == 204
    cs = {**sample("chirpstack-up.json"), "deduplicationId": str(uuid.uuid4())}
    answer = ingest.post(
        "/callbacks/chirpstack",
        cs,
        token="",
        params={"event": "up", "token": ingest.settings.token},
    )
    assert answer.status_code == 204


@pytest.mark.parametrize(("path", "name", "params"), ENDPOINTS)
def test_invalid_json_is_400(ingest: Ingest, path: str, name: str, params: dict[str, str]) -> None:
    for raw in (b"{not json", b"", b"\xff\xfe", b'{"device": '):
        answer = ingest.post(path, None, raw=raw, params=params)
        assert answer.status_code == 400, raw
        assert answer.json() == {
            "error": {"code": "invalid_json", "message": "The request body is not valid JSON."}
        }
    answer = ingest.post(path, [1, 2], params=params)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    ("path", "params", "body", "field"),
    [
        ("/callbacks/sigfox", {}, {"device": "1A2B3C", "seqNumber": 1}, "time"),
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "seqNumber": -1}, "seqNumber"),
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "data": "0g"}, "data"),
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "data": "010"}, "data"),
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "device": "XYZ"}, "device"),
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "time": "soon"}, "time"),
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "ack": "maybe"}, "ack"),
        (
            "/callbacks/ttn",
            {},
            {**_ttn(), "end_device_ids": {"device_id": "x"}},
            "end_device_ids",
        ),
        (
            "/callbacks/ttn",
            {},
            {**_ttn(), "uplink_message": {"frm_payload": "***", "f_port": 1}},
            "uplink_message.frm_payload",
        ),
        ("/callbacks/ttn", {}, {**_ttn(), "received_at": "yesterday"}, "received_at"),
        ("/callbacks/ttn", {}, {**_ttn(), "uplink_message": "up"}, "uplink_message"),
        (
            "/callbacks/chirpstack",
            {"event": "up"},
            {**sample("chirpstack-up.json"), "deviceInfo": {"devEui": "12"}},
            "deviceInfo.devEui",
        ),
        (
            "/callbacks/chirpstack",
            {"event": "up"},
            {**sample("chirpstack-up.json"), "fCnt": -1},
            "fCnt",
        ),
        (
            "/callbacks/chirpstack",
            {"event": "ack"},
            {**sample("chirpstack-ack.json"), "fCntDown": "many"},
            "fCntDown",
        ),
    ],
)
def test_invalid_content_is_422_with_the_field(
    ingest: Ingest, path: str, params: dict[str, str], body: dict[str, Any], field: str
) -> None:
    answer = ingest.post(path, body, params=params)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    assert field in [d["field"] for d in error["details"]], error
    assert field in error["message"]


def test_chirpstack_without_event_is_400(ingest: Ingest) -> None:
    answer = ingest.post("/callbacks/chirpstack", sample("chirpstack-up.json"))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "missing_event"


def test_refused_bodies_are_kept_on_dead_letter(ingest: Ingest) -> None:
    marker = uuid.uuid4().hex
    refused = [
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "data": "0g", "m": marker}),
        ("/callbacks/chirpstack", {}, {**sample("chirpstack-up.json"), "m": marker}),
        ("/callbacks/ttn", {}, {**_ttn(), "received_at": "yesterday", "m": marker}),
    ]
    for path, params, body in refused:
        assert ingest.post(path, body, params=params).status_code in (400, 422)
    # Without the right token nothing is kept: anyone could fill the topic.
    stranger = ingest.post("/callbacks/sigfox", {"m": marker, "x": 1}, token="wrong")
    assert stranger.status_code == 401
    kept = wait_for_messages(
        ingest.kafka,
        ingest.topic("dead-letter"),
        lambda v: marker in v.get("raw", ""),
        count=3,
    )
    by_source = {v["source"]: v for v in kept}
    assert set(by_source) == {"sigfox", "chirpstack", "ttn"}
    assert by_source["sigfox"]["error"].startswith("invalid: Invalid content: data")
    assert by_source["chirpstack"]["error"].startswith("missing_event")
    assert json.loads(by_source["ttn"]["raw"])["received_at"] == "yesterday"
    for value in kept:
        check_schema("dead-letter", value)
    assert not any('"x": 1' in v["raw"] or '"x":1' in v["raw"] for v in kept)


def test_credentials_never_reach_dead_letter(ingest: Ingest) -> None:
    """Issue #19: a refused callback authenticated by ``?token=`` was kept with its query string
    verbatim, so whoever reads ``dead-letter`` could forge uplinks for every device."""
    marker = uuid.uuid4().hex
    token = ingest.settings.token
    secrets = {
        "apikey": f"k1{marker}",
        "api_key": f"k2{marker}",
        "password": f"k3{marker}",
        "access_token": f"k4{marker}",
        "Secret": f"k5{marker}",
    }
    params = {"token": token, **secrets, "x": "1"}
    refused = [
        ("/callbacks/sigfox", {}, {**sample("sigfox-uplink.json"), "data": "0g", "m": marker}),
        ("/callbacks/chirpstack", {}, {**sample("chirpstack-up.json"), "m": marker}),
        ("/callbacks/chirpstack", {"event": "up"}, {"m": marker, "note": token}),
        ("/callbacks/ttn", {}, {**_ttn(), "received_at": "yesterday", "m": marker}),
    ]
    for path, extra, body in refused:
        answer = ingest.post(path, body, token="", params={**extra, **params})
        assert answer.status_code in (400, 422), answer.text
        assert token not in answer.text
        assert not any(value in answer.text for value in secrets.values())
    kept = wait_for_messages(
        ingest.kafka,
        ingest.topic("dead-letter"),
        lambda v: marker in v.get("raw", ""),
        count=len(refused),
    )
    for value in kept:
        text = json.dumps(value)
        assert token not in text, value
        assert not any(secret in text for secret in secrets.values()), value
        assert "x=1" in value["query"]  # the rest of the query is kept, for the operator
        assert "token=redacted" in value["query"]
        check_schema("dead-letter", value)


def test_body_over_the_limit_is_413(ingest: Ingest) -> None:
    big = {**sample("sigfox-uplink.json"), "padding": "x" * (64 * 1024)}
    for path, params in (("/callbacks/sigfox", {}), ("/callbacks/chirpstack", {"event": "up"})):
        answer = ingest.post(path, big, params=params)
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "payload_too_large"


# -- deduplication ----------------------------------------------------------------------------


def _concurrently(
    ingest: Ingest, requests: list[tuple[str, dict[str, Any], dict[str, str]]]
) -> list[int]:
    base = str(ingest.client.base_url)

    def one(request: tuple[str, dict[str, Any], dict[str, str]]) -> int:
        path, body, params = request
        with httpx.Client(base_url=base, timeout=20) as client:
            answer = client.post(
                path,
                json=body,
                params=params,
                headers={"X-Callback-Token": ingest.settings.token},
            )
            return answer.status_code

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def test_duplicate_storm_publishes_one_envelope(ingest: Ingest) -> None:
    before = metric("hivepipe_uplinks_duplicate_total", source="sigfox")
    frames = [
        {**sample("sigfox-uplink.json"), "seqNumber": 104, "station": station, "rssi": rssi}
        for station, rssi in (("0A1B", -121.5), ("0C2D", -130.0), ("0E3F", -118.0))
    ]
    # Three stations at once, then the network's retry of each.
    statuses = _concurrently(ingest, [("/callbacks/sigfox", f, {}) for f in frames * 2])
    assert statuses == [204] * 6
    envelopes = wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["source"] == "sigfox" and v["meta"].get("seq") == 104,
    )
    assert len(envelopes) == 1
    assert metric("hivepipe_uplinks_duplicate_total", source="sigfox") == before + 5

    ttn = [_ttn(f_cnt=77)] * 3
    cs = [{**sample("chirpstack-up.json"), "deduplicationId": "storm-1", "fCnt": 78}] * 3
    statuses = _concurrently(
        ingest,
        [("/callbacks/ttn", b, {}) for b in ttn]
        + [("/callbacks/chirpstack", b, {"event": "up"}) for b in cs],
    )
    assert statuses == [204] * 6
    ups = wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["meta"].get("f_cnt") in (77, 78),
        count=2,
    )
    assert sorted(v["meta"]["f_cnt"] for v in ups) == [77, 78]


def test_a_frame_after_the_window_is_new(ingest: Ingest) -> None:
    body = {**sample("sigfox-uplink.json"), "seqNumber": 105}
    assert ingest.post("/callbacks/sigfox", body).status_code == 204
    assert ingest.settings.database_url
    with psycopg.connect(ingest.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE uplink_dedup SET seen = now() - interval '11 minutes' WHERE key = %s",
            (f"sigfox:{SIGFOX}:105",),
        )
    assert ingest.post("/callbacks/sigfox", body).status_code == 204
    wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["source"] == "sigfox" and v["meta"].get("seq") == 105,
        count=2,
    )


# -- real bodies without a usual field (issue #19) ------------------------------------------


def test_a_ttn_rejoin_without_session_key_id_is_not_a_duplicate(ingest: Ingest) -> None:
    """Without ``session_key_id`` the key was (DevEUI, f_cnt): after a rejoin (f_cnt 0 again,
    a new DevAddr) the new uplink was thrown away as a duplicate of the old session's."""
    before, after = (f"{uuid.uuid4().int % 2**32:08X}" for _ in range(2))
    for dev_addr in (before, after, after):  # the last one: a real duplicate
        body = _ttn(f_cnt=0)
        del body["uplink_message"]["session_key_id"]
        body["end_device_ids"] = {**body["end_device_ids"], "dev_addr": dev_addr}
        answer = ingest.post("/callbacks/ttn", body)
        assert answer.status_code == 204, answer.text
    seen = wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["device"] == TTN_EUI and v["meta"].get("dev_addr") in (before, after),
        count=2,
    )
    assert sorted(v["meta"]["dev_addr"] for v in seen) == sorted([before, after])


def test_a_ttn_downlink_report_without_dev_eui_is_kept_on_dead_letter(ingest: Ingest) -> None:
    """TTS sends some downlink events (failed, for example) for a device known by its
    ``device_id`` alone: a 422 made TTS count failures and at last disable the webhook."""
    marker = uuid.uuid4().hex
    report = {
        "end_device_ids": {"device_id": "abp-node-7", "application_ids": {"application_id": "a"}},
        "correlation_ids": [f"as:downlink:{marker}"],
        "received_at": "2023-11-14T22:20:00Z",
        "downlink_failed": {
            "downlink": TTN_DOWNLINK,
            "error": {"namespace": "pkg/networkserver", "name": "device_not_found"},
        },
    }
    answer = ingest.post("/callbacks/ttn", report)
    assert answer.status_code == 204, answer.text
    [kept] = wait_for_messages(
        ingest.kafka, ingest.topic("dead-letter"), lambda v: marker in v.get("raw", "")
    )
    assert kept["error"] == "missing_dev_eui"
    assert kept["source"] == "ttn"
    assert json.loads(kept["raw"]) == report
    check_schema("dead-letter", kept)
    # What is not a TTS message at all is still refused.
    for body in ({"downlink_failed": {}}, {"end_device_ids": [], "downlink_failed": {}}):
        assert ingest.post("/callbacks/ttn", body).status_code == 422


def test_a_sigfox_callback_without_seq_number_is_accepted_once(ingest: Ingest) -> None:
    """Some Sigfox templates send only ``device``, ``time`` and ``data``: deduplicated on the
    three of them; a downlink request without ``seqNumber`` gets no downlink (204)."""
    when = 1_700_100_000 + uuid.uuid4().int % 1_000_000
    body = {"device": SIGFOX, "time": when, "data": "010f08fc0906"}
    for sent in (body, body, {**body, "data": "010f08fc0907"}, {**body, "time": when + 1}):
        answer = ingest.post("/callbacks/sigfox", sent)
        assert answer.status_code == 204, answer.text
    request = {**body, "time": when + 2, "ack": True}
    answer = ingest.post("/callbacks/sigfox", request)
    assert answer.status_code == 204, answer.text
    seen = wait_for_messages(
        ingest.kafka,
        ingest.topic("uplinks"),
        lambda v: v["device"] == SIGFOX and when <= v["received"] <= when + 2,
        count=4,
    )
    assert sorted((v["received"], v["payload_hex"]) for v in seen) == [
        (when, "010f08fc0906"),
        (when, "010f08fc0907"),
        (when + 1, "010f08fc0906"),
        (when + 2, "010f08fc0906"),
    ]
    assert not any("seq" in v["meta"] for v in seen)
    for value in seen:
        check_schema("uplinks", value)


# -- unknown and deactivated devices ----------------------------------------------------------


def test_unknown_and_inactive_devices_are_kept_on_dead_letter(ingest: Ingest) -> None:
    unknown = {**sample("sigfox-uplink.json"), "device": "abc999", "seqNumber": 106}
    inactive = {**sample("sigfox-uplink.json"), "device": SIGFOX_OFF, "seqNumber": 107}
    # Downlink requests too: no downlink, and the uplink is dead-lettered all the same.
    unknown_ack = {**unknown, "seqNumber": 108, "ack": True}
    inactive_ack = {**inactive, "seqNumber": 109, "ack": True}
    ttn_unknown = _ttn()
    ttn_unknown["end_device_ids"] = {**ttn_unknown["end_device_ids"], "dev_eui": "00000000000000AA"}
    for path, body in (
        ("/callbacks/sigfox", unknown),
        ("/callbacks/sigfox", inactive),
        ("/callbacks/sigfox", unknown_ack),
        ("/callbacks/sigfox", inactive_ack),
        ("/callbacks/ttn", ttn_unknown),
    ):
        answer = ingest.post(path, body)
        assert answer.status_code == 204, answer.text
    dead = wait_for_messages(
        ingest.kafka,
        ingest.topic("dead-letter"),
        lambda v: v.get("device") in ("ABC999", SIGFOX_OFF, "00000000000000AA"),
        count=5,
    )
    errors = {(v["device"], v["meta"].get("seq")): v["error"] for v in dead}
    assert errors == {
        ("ABC999", 106): "unknown_device",
        (SIGFOX_OFF, 107): "inactive_device",
        ("ABC999", 108): "unknown_device",
        (SIGFOX_OFF, 109): "inactive_device",
        ("00000000000000AA", None): "unknown_device",
    }
    by_device = {v["device"]: v for v in dead}
    assert by_device["ABC999"]["payload_hex"] == "010f08fc0906"  # the whole envelope is kept
    uplinks = ingest.messages("uplinks")
    assert not [v for v in uplinks if v["device"] in ("ABC999", SIGFOX_OFF)]
    assert metric("hivepipe_uplinks_rejected_total", source="sigfox", reason="unknown_device") >= 1


# -- random bodies (hypothesis) ---------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutated(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """A sample with some of its fields (nested ones too) replaced or removed."""
    original = sample(name)

    def paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        out = []
        if isinstance(value, dict):
            for key, inner in value.items():
                out.append((*prefix, key))
                out.extend(paths(inner, (*prefix, key)))
        return out

    all_paths = paths(original)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = copy.deepcopy(original)
        for path in draw(st.lists(st.sampled_from(all_paths), max_size=3)):
            target = body
            for key in path[:-1]:
                if not isinstance(target, dict) or key not in target:
                    break
                target = target[key]
            else:
                if isinstance(target, dict):
                    if draw(st.booleans()):
                        target[path[-1]] = draw(JSON)
                    else:
                        target.pop(path[-1], None)
        return body

    return build()


CASES = [
    ("/callbacks/sigfox", {}, "sigfox-uplink.json"),
    ("/callbacks/ttn", {}, "ttn-uplink.json"),
    ("/callbacks/chirpstack", {"event": "up"}, "chirpstack-up.json"),
    ("/callbacks/chirpstack", {"event": "ack"}, "chirpstack-ack.json"),
]


@pytest.mark.parametrize(("path", "params", "name"), CASES)
def test_random_bodies_never_break_a_callback(
    ingest: Ingest, path: str, params: dict[str, str], name: str
) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=st.one_of(JSON, _mutated(name)))
    def check(body: Any) -> None:
        answer = ingest.post(path, body, params=params)
        assert answer.status_code in (204, 400, 422), (body, answer.status_code, answer.text)
        if answer.status_code != 204:
            assert set(answer.json()["error"]) >= {"code", "message"}

    check()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200))
def test_random_bytes_never_break_a_callback(ingest: Ingest, raw: bytes) -> None:
    for path, params, _ in CASES:
        answer = ingest.post(path, None, raw=raw, params=params)
        assert answer.status_code in (204, 400, 422), (raw, answer.text)


HEX = "0123456789abcdefABCDEF"
MARK = 1_800_000_000  # times of this test only


def _quoted(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(value, value.map(str))


@st.composite
def valid_sigfox(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device": draw(st.sampled_from(["5a5a5a", SIGFOX_PROP, "fe01", "FE02", "77aa0001"])),
        "time": draw(_quoted(st.integers(MARK, MARK + 10_000))),
        "data": draw(st.binary(max_size=12)).hex(),
        "seqNumber": draw(_quoted(st.integers(0, 4095))),
        "ack": draw(st.one_of(st.booleans(), st.sampled_from(["true", "false"]))),
    }
    for key, strategy in (
        ("station", st.text(HEX, min_size=4, max_size=4)),
        ("rssi", _quoted(st.floats(-150, 0))),
        ("snr", st.floats(0, 40)),
        ("longPolling", st.booleans()),
    ):
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def test_every_valid_sigfox_uplink_reaches_kafka(ingest: Ingest) -> None:
    sent: set[tuple[str, int]] = set()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=valid_sigfox())
    def check(body: dict[str, Any]) -> None:
        answer = ingest.post("/callbacks/sigfox", body)
        assert answer.status_code == 204, (body, answer.text)
        sent.add((body["device"].upper(), int(body["seqNumber"])))

    check()
    mine = lambda v: v.get("source") == "sigfox" and MARK <= v.get("received", 0) <= MARK + 10_000  # noqa: E731

    def all_there() -> list[dict[str, Any]] | None:
        seen = [v for t in ("uplinks", "dead-letter") for v in ingest.messages(t) if mine(v)]
        return seen if len(seen) >= len(sent) else None

    from tests.integration.ingest_support import wait_until

    seen = wait_until(all_there, timeout=15, interval=0.3)
    keys = [(v["device"], v["meta"]["seq"]) for v in seen]
    assert sorted(keys) == sorted(sent)  # each exactly once, on uplinks or (unknown) dead-letter
    for v in seen:
        assert ("error" in v) == (v["device"] != SIGFOX_PROP)


LORA_MARK = 1_900_000_000  # times of the LoRaWAN property test only
LORA_KNOWN = "70B3D57ED00000F1"


@st.composite
def valid_lorawan(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, str], tuple[str, int]]:
    """A TTN or ChirpStack uplink of a known or an unknown device, and its dedup identity."""
    import base64
    from datetime import UTC, datetime

    dev_eui = draw(st.sampled_from([LORA_KNOWN, LORA_KNOWN.lower(), "70B3D57ED00000F2"]))
    f_cnt = draw(st.integers(0, 2**32 - 1))
    payload = base64.b64encode(draw(st.binary(max_size=51))).decode()
    moment = LORA_MARK + draw(st.integers(0, 10**6)) / 1000
    stamp = datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
    if draw(st.booleans()):
        body = sample("ttn-uplink.json")
        body["end_device_ids"]["dev_eui"] = dev_eui
        body["received_at"] = stamp
        body["uplink_message"] = {"f_port": draw(st.integers(1, 223)), "frm_payload": payload}
        if f_cnt:
            body["uplink_message"]["f_cnt"] = f_cnt
        return "/callbacks/ttn", body, {}, (dev_eui.upper(), f_cnt)
    body = sample("chirpstack-up.json")
    body.update(
        {
            "deduplicationId": f"prop-{dev_eui.upper()}-{f_cnt}",
            "time": stamp,
            "fCnt": f_cnt,
            "data": payload,
        }
    )
    body["deviceInfo"] = {**body["deviceInfo"], "devEui": dev_eui}
    return "/callbacks/chirpstack", body, {"event": "up"}, (dev_eui.upper(), f_cnt)


def test_every_valid_lorawan_uplink_reaches_kafka(ingest: Ingest) -> None:
    from tests.integration.ingest_support import wait_until

    register_devices(ingest.settings.database_url or "", [(LORA_KNOWN, "lorawan-lpp", True)])
    sent: set[tuple[str, str, int]] = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=valid_lorawan())
    def check(case: tuple[str, dict[str, Any], dict[str, str], tuple[str, int]]) -> None:
        path, body, params, (device, f_cnt) = case
        answer = ingest.post(path, body, params=params)
        assert answer.status_code == 204, (body, answer.text)
        sent.add(("ttn" if "ttn" in path else "chirpstack", device, f_cnt))

    check()

    def mine(v: dict[str, Any]) -> bool:
        return v.get("source") in ("ttn", "chirpstack") and v.get("received", 0) >= LORA_MARK

    def all_there() -> list[dict[str, Any]] | None:
        seen = [v for t in ("uplinks", "dead-letter") for v in ingest.messages(t) if mine(v)]
        return seen if len(seen) >= len(sent) else None

    seen = wait_until(all_there, timeout=15, interval=0.3)
    keys = [(v["source"], v["device"], v["meta"]["f_cnt"]) for v in seen]
    assert sorted(keys) == sorted(sent)  # each exactly once (TTN: same session in every body)
    for v in seen:
        assert ("error" in v) == (v["device"] != LORA_KNOWN)


def test_deeply_nested_bodies_are_not_a_500(ingest: Ingest) -> None:
    deep: Any = {}
    for _ in range(400):
        deep = {"x": deep}
    ids = sample("ttn-uplink.json")["end_device_ids"]
    bodies = [
        ("/callbacks/ttn", {"end_device_ids": ids, "downlink_ack": {"f_port": 1}, "extra": deep}),
        ("/callbacks/ttn", {**sample("ttn-uplink.json"), "extra": deep}),
        ("/callbacks/sigfox", {**sample("sigfox-uplink.json"), "seqNumber": 108, "x": deep}),
    ]
    for path, body in bodies:
        answer = ingest.post(path, body)
        assert answer.status_code in (204, 400), (path, answer.text)


async def test_sigfox_source_allowlist(pg_server: str, kafka_server: str, tmp_path: Path) -> None:
    body = sample("sigfox-uplink.json")
    for allowed, expected in (("185.110.96.0/22", 403), ("185.110.96.0/22, 127.0.0.0/8", 401)):
        async with api_on_new_schema(
            pg_server, kafka=kafka_server, data_dir=tmp_path, sigfox_allowed_sources=allowed
        ) as api:  # the test client's address is 127.0.0.1
            answer = await api.client.post(
                "/callbacks/sigfox", json=body, headers={"X-Callback-Token": "wrong"}
            )
            assert answer.status_code == expected, answer.text
            if expected == 403:  # refused before the token is even looked at
                assert answer.json()["error"]["code"] == "source_not_allowed"
            assert len(api.settings.sigfox_allowed_sources) == allowed.count(",") + 1
