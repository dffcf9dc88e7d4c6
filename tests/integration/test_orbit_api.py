"""Orbit device management through the real API (in-process, its lifespan on the test servers):
the REST endpoints, the Sigfox downlink answer, and the outbox that carries their messages to
the real Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from services.orbit import changes
from services.platform import outbox
from services.platform.db import migrate, open_pool
from services.platform.events import ALL_TOPICS, TOPIC_UPLINKS
from services.platform.kafka import KafkaPublisher, PublishFailed, ensure_topics
from tests.api_support import (
    Account,
    Api,
    api_on_new_schema,
    api_settings,
    connect,
    make_account,
    running_api,
)
from tests.conftest import drop_schema, new_schema
from tests.integration.ingest_support import sample
from tests.orbit_support import Message, of, read_until

FACTORY_T = {
    "sample_interval": 15,
    "batch_size": 4,
    "temp_high": 40,
    "temp_low": -10,
    "led": 0,
    "downlink_every": 24,
}


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("orbit")
    ) as running:
        await ensure_topics(kafka_server, [running.settings.topic(t) for t in ALL_TOPICS], 2)
        yield running


@pytest.fixture(scope="module")
async def owner(api: Api) -> Account:
    return await make_account(api.database_url)


async def own_device(api: Api, account: Account, model: str = "orbit-t") -> str:
    """A device of ``account`` registered directly (for keys that may not register one)."""
    from services.devices.store import create_device

    async with await connect(api.database_url) as conn:
        row = await create_device(
            conn, device_id=new_id(), model=model, name="", owner_id=account.user_id
        )
    assert row is not None
    return str(row["id"])


def new_id() -> str:
    """A fresh Sigfox id (8 hex digits)."""
    return uuid.uuid4().hex[:8].upper()


async def add_device(api: Api, account: Account, model: str = "orbit-t", device: str = "") -> str:
    device = device or new_id()
    created = await api.client.post(
        "/v1/devices", json={"id": device, "model": model}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def view(api: Api, account: Account, device: str) -> Message:
    answer = await api.client.get(f"/v1/orbit/dev/{device}", headers=account.headers)
    assert answer.status_code == 200, answer.text
    body: Message = answer.json()
    return body


async def queue(api: Api, account: Account, device: str, params: dict[str, Any]) -> Any:
    return await api.client.post(
        f"/v1/orbit/dev/{device}", json={"params": params}, headers=account.headers
    )


async def stored_events(api: Api, device: str) -> list[tuple[str, Message]]:
    async with await connect(api.database_url) as conn:
        cur = await conn.execute(
            "SELECT type, data FROM device_events WHERE device = %s ORDER BY id", (device,)
        )
        return [(row["type"], row["data"]) for row in await cur.fetchall()]


async def outbox_rows(api: Api) -> int:
    async with await connect(api.database_url) as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM kafka_outbox")
        row = await cur.fetchone()
        assert row is not None
        return int(row["n"])


async def outbox_drained(api: Api, timeout: float = 5.0) -> bool:
    """The relay deletes rows just after Kafka has them: wait for that commit."""
    deadline = time.monotonic() + timeout
    while await outbox_rows(api):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def sigfox(api: Api, body: Message) -> Any:
    return await api.client.post(
        "/callbacks/sigfox", json=body, headers={"X-Callback-Token": api.settings.token}
    )


# --- GET -------------------------------------------------------------------------------------


async def test_a_new_device_shows_the_factory_values(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    assert await view(api, owner, device.lower()) == {
        "device": device,
        "model": "orbit-t",
        "active": FACTORY_T,
        "pending": [],
        "downlinks_left_24h": 4,
    }
    th = await add_device(api, owner, "orbit-th")
    assert (await view(api, owner, th))["active"]["humidity_high"] == 90


async def test_unknown_invisible_and_non_orbit_devices_are_404(api: Api, owner: Account) -> None:
    stranger = await make_account(api.database_url)
    theirs = await add_device(api, stranger)
    mqtt = await add_device(api, owner, "json", device=f"m-{uuid.uuid4().hex[:6]}")
    for device, code in (
        ("ABCDEF99", "device_not_found"),
        (theirs, "device_not_found"),
        (mqtt, "not_orbit_device"),
    ):
        for method, path, body in (
            ("GET", f"/v1/orbit/dev/{device}", None),
            ("POST", f"/v1/orbit/dev/{device}", {"params": {"led": 1}}),
            ("DELETE", f"/v1/orbit/dev/{device}/pending/led", None),
        ):
            answer = await api.client.request(method, path, json=body, headers=owner.headers)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == code
    # The stranger's device was left alone.
    assert (await view(api, stranger, theirs))["pending"] == []


async def test_keys_and_scopes(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    reader = await make_account(api.database_url, scopes=("read-only",))
    reader_device = await own_device(api, reader)
    assert (await api.client.get(f"/v1/orbit/dev/{device}")).status_code == 401
    assert (await view(api, reader, reader_device))["device"] == reader_device
    refused = await queue(api, reader, reader_device, {"led": 1})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "missing_scope"
    deleting = await api.client.delete(
        f"/v1/orbit/dev/{reader_device}/pending/led", headers=reader.headers
    )
    assert deleting.status_code == 403
    data_only = await make_account(api.database_url, scopes=("readdata",))
    data_device = await own_device(api, data_only)
    answer = await api.client.get(f"/v1/orbit/dev/{data_device}", headers=data_only.headers)
    assert answer.status_code == 403


# --- POST ------------------------------------------------------------------------------------


async def test_queueing_answers_202_with_the_view_and_publishes_the_events(
    api: Api, owner: Account
) -> None:
    device = await add_device(api, owner)
    before = time.time()
    answer = await queue(api, owner, device, {"sample_interval": 30, "led": 1, "temp_high": 30.5})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["device"] == device
    assert body["active"] == FACTORY_T
    assert [
        (p["param"], p["value"], p["status"], p["attempts"], p["seq"]) for p in body["pending"]
    ] == [
        ("sample_interval", 30, "queued", 0, None),
        ("temp_high", 30.5, "queued", 0, None),
        ("led", 1, "queued", 0, None),
    ]
    assert all(before - 1 <= p["queued"] <= time.time() + 1 for p in body["pending"])
    assert body.pop("outcomes") == {
        "sample_interval": "queued",
        "led": "queued",
        "temp_high": "queued",
    }
    assert body == await view(api, owner, device)  # the GET body, and the outcomes
    assert [t for t, _ in await stored_events(api, device)] == ["param_queued"] * 3

    published = await read_until(
        api.settings,
        "device-events",
        lambda seen: len([m for m in seen if of(device, "param_queued")(m)]) >= 3,
    )
    mine = [m for m in published if of(device)(m)]
    assert sorted((m["param"], m["value"]) for m in mine) == [
        ("led", 1),
        ("sample_interval", 30),
        ("temp_high", 30.5),
    ]
    assert all(m["type"] == "param_queued" and m["time"] >= before - 1 for m in mine)


async def test_the_queue_rules_and_their_events(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    # Rule 1: the active value, nothing pending: nothing queued, no event.
    same = await queue(api, owner, device, {"led": 0})
    assert same.status_code == 202
    assert same.json()["pending"] == []
    assert same.json()["outcomes"] == {"led": "unchanged"}  # "the answer says so"
    # Rule 5, then rule 3 (replaced in place), then rule 2 (back to the active value: dropped).
    assert (await queue(api, owner, device, {"led": 1})).status_code == 202
    replaced = await queue(api, owner, device, {"sample_interval": 20})
    assert replaced.status_code == 202
    replaced = await queue(api, owner, device, {"sample_interval": 25})
    assert [(p["param"], p["value"]) for p in replaced.json()["pending"]] == [
        ("sample_interval", 25),
        ("led", 1),
    ]
    assert replaced.json()["outcomes"] == {"sample_interval": "replaced"}
    dropped = await queue(api, owner, device, {"led": 0})
    assert [p["param"] for p in dropped.json()["pending"]] == ["sample_interval"]
    assert dropped.json()["outcomes"] == {"led": "dropped"}
    kinds = ["param_queued", "param_queued", "param_replaced", "param_dropped"]
    assert [t for t, _ in await stored_events(api, device)] == kinds
    published = await read_until(
        api.settings,
        "device-events",
        lambda seen: any(of(device, "param_dropped")(m) for m in seen),
    )
    assert [m["type"] for m in published if of(device)(m)] == kinds
    [replacement] = [m for m in published if of(device, "param_replaced")(m)]
    assert (replacement["value"], replacement["previous"]) == (25, 20)


@pytest.mark.parametrize(
    ("model", "params", "code", "fields"),
    [
        ("orbit-t", {"sample_intervall": 30}, "invalid_param", ["params.sample_intervall"]),
        ("orbit-t", {"humidity_high": 80}, "invalid_param", ["params.humidity_high"]),
        ("orbit-lite", {"humidity_high": 80}, "invalid_param", ["params.humidity_high"]),
        ("orbit-t", {"sample_interval": 0}, "invalid_param", ["params.sample_interval"]),
        ("orbit-t", {"sample_interval": 1441}, "invalid_param", ["params.sample_interval"]),
        ("orbit-t", {"temp_high": 125.01}, "invalid_param", ["params.temp_high"]),
        ("orbit-t", {"temp_high": 30.505}, "invalid_param", ["params.temp_high"]),
        ("orbit-t", {"led": 1, "downlink_every": 5}, "invalid_param", ["params.downlink_every"]),
        ("orbit-th", {"humidity_high": 100.5}, "invalid_param", ["params.humidity_high"]),
        (
            "orbit-th",
            {"batch_size": 4, "temp_high": 30.505},
            "invalid_param",
            ["params.batch_size", "params.temp_high"],
        ),
        ("orbit-t", {"led": "1"}, "invalid", ["params.led"]),
        ("orbit-t", {"led": True}, "invalid", ["params.led"]),
        ("orbit-t", {"led": None}, "invalid", ["params.led"]),
        ("orbit-t", {}, "invalid", ["params"]),
    ],
)
async def test_an_invalid_update_is_422_and_nothing_is_queued(
    api: Api, owner: Account, model: str, params: dict[str, Any], code: str, fields: list[str]
) -> None:
    device = await add_device(api, owner, model)
    answer = await queue(api, owner, device, params)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert [d["field"] for d in error["details"]] == fields
    assert all(d["message"] for d in error["details"])
    assert (await view(api, owner, device))["pending"] == []
    assert await stored_events(api, device) == []


async def test_the_422_details_name_each_refused_parameter(api: Api, owner: Account) -> None:
    device = await add_device(api, owner, "orbit-th")
    answer = await queue(api, owner, device, {"batch_size": 4, "temp_high": 30.505, "led": 1})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_param"
    assert error["details"] == [
        {
            "field": "params.batch_size",
            "message": "batch_size must be between 1 and 3 samples on orbit-th, got 4",
            "type": "invalid_param",
        },
        {
            "field": "params.temp_high",
            "message": "temp_high must be a multiple of 0.01 °C, got 30.505",
            "type": "invalid_param",
        },
    ]
    assert error["message"].startswith("Nothing was queued: ")


async def test_malformed_bodies_are_400_or_422(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    headers = {**owner.headers, "Content-Type": "application/json"}
    broken = await api.client.post(f"/v1/orbit/dev/{device}", content=b"{", headers=headers)
    assert broken.status_code == 400
    for body in (b"[]", b'{"params": [1]}', b'{"params": {"led": 1}, "extra": 1}', b"{}"):
        answer = await api.client.post(f"/v1/orbit/dev/{device}", content=body, headers=headers)
        assert answer.status_code == 422, (body, answer.text)
    assert (await view(api, owner, device))["pending"] == []


# --- DELETE ----------------------------------------------------------------------------------


async def test_deleting_pending_updates(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    assert (await queue(api, owner, device, {"led": 1, "sample_interval": 30})).status_code == 202
    path = f"/v1/orbit/dev/{device.lower()}/pending/led"
    deleted = await api.client.delete(path, headers=owner.headers)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert [p["param"] for p in (await view(api, owner, device))["pending"]] == ["sample_interval"]
    again = await api.client.delete(path, headers=owner.headers)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "nothing_pending"
    lacks = await api.client.delete(
        f"/v1/orbit/dev/{device}/pending/humidity_high", headers=owner.headers
    )
    assert lacks.status_code == 404
    unknown = await api.client.delete(
        f"/v1/orbit/dev/{device}/pending/colour", headers=owner.headers
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "invalid_param"
    assert [d["field"] for d in unknown.json()["error"]["details"]] == ["param"]
    kinds = ["param_queued", "param_queued", "param_dropped"]
    assert [t for t, _ in await stored_events(api, device)] == kinds
    published = await read_until(
        api.settings,
        "device-events",
        lambda seen: any(of(device, "param_dropped")(m) for m in seen),
    )
    [dropped] = [m for m in published if of(device, "param_dropped")(m)]
    assert (dropped["param"], dropped["value"], dropped["reason"]) == (
        "led",
        1,
        "deleted by an operator",
    )


async def test_deleting_on_a_device_never_configured_is_404(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    answer = await api.client.delete(f"/v1/orbit/dev/{device}/pending/led", headers=owner.headers)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "nothing_pending"


# --- The Sigfox downlink request ---------------------------------------------------------------


async def test_the_downlink_request_gets_the_exact_answer_once(api: Api, owner: Account) -> None:
    request = sample("sigfox-downlink-request-quoted.json")  # device "1a2b3c", seqNumber "2"
    expected = sample("sigfox-downlink-answer.json")
    await add_device(api, owner, device="1A2B3C")
    assert (await queue(api, owner, "1A2B3C", {"sample_interval": 30, "led": 1})).status_code == 202

    first = await sigfox(api, request)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert first.json() == expected == {"1A2B3C": {"downlinkData": "a20101001e060001"}}
    retry = await sigfox(api, request)
    assert (retry.status_code, retry.content) == (200, first.content)

    pending = (await view(api, owner, "1A2B3C"))["pending"]
    assert [(p["param"], p["status"], p["seq"]) for p in pending] == [
        ("sample_interval", "in_flight", 1),
        ("led", "in_flight", 1),
    ]
    sent = [d for t, d in await stored_events(api, "1A2B3C") if t == "downlink_sent"]
    assert sent == [
        {
            "seq": 1,
            "frame": "a20101001e060001",
            "params": {"sample_interval": 30, "led": 1},
            "sigfox_seq_number": 2,
        }
    ]
    # A later request of the device (nothing left to send: 204) as a marker: the outbox keeps
    # the order, so once it is on Kafka everything before it is too.
    marker = {**request, "seqNumber": "3", "time": "1700001200", "data": "0100"}
    assert (await sigfox(api, marker)).status_code == 204
    uplinks = await read_until(
        api.settings,
        TOPIC_UPLINKS,
        lambda seen: any(of("1A2B3C")(m) and m["meta"]["seq"] == 3 for m in seen),
    )
    envelopes = [m for m in uplinks if of("1A2B3C")(m)]
    assert [(m["meta"]["seq"], m["payload_hex"], m["downlink_requested"]) for m in envelopes] == [
        (2, "010f08fc", True),
        (3, "0100", True),
    ]
    assert envelopes[0]["received"] == 1700000600
    assert envelopes[0]["source"] == "sigfox"
    events = await read_until(
        api.settings,
        "device-events",
        lambda seen: any(of("1A2B3C", "downlink_sent")(m) for m in seen),
    )
    assert [m["type"] for m in events if of("1A2B3C")(m)] == [
        "param_queued",
        "param_queued",
        "downlink_sent",
    ]
    assert await outbox_drained(api)


async def test_concurrent_duplicates_get_one_downlink(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    await queue(api, owner, device, {"led": 1})
    now = int(time.time())
    body = {"device": device.lower(), "time": now, "data": "", "seqNumber": 77, "ack": True}
    duplicates = (
        REGISTRY.get_sample_value("hivepipe_uplinks_duplicate_total", {"source": "sigfox"}) or 0.0
    )
    answers = await asyncio.gather(*(sigfox(api, body) for _ in range(6)))
    counted = REGISTRY.get_sample_value("hivepipe_uplinks_duplicate_total", {"source": "sigfox"})
    assert counted == duplicates + 5
    assert {(a.status_code, a.content) for a in answers} == {
        (200, orjson.dumps({device: {"downlinkData": "a101060001000000"}}))
    }
    state = await view(api, owner, device)
    assert state["downlinks_left_24h"] == 3
    assert [t for t, _ in await stored_events(api, device)].count("downlink_sent") == 1
    # Requests with other seqNumbers at once: serialised, never an update or a seq twice. The
    # first sends sample_interval (seq 2); the second is the second uplink since led was sent
    # without an ack: led is queued again and rides that answer (seq 3); nothing is left then.
    await queue(api, owner, device, {"sample_interval": 60})
    others = await asyncio.gather(
        *(sigfox(api, {**body, "seqNumber": 78 + i, "time": now + 1}) for i in range(4))
    )
    frames = sorted(a.json()[device]["downlinkData"] for a in others if a.status_code == 200)
    assert [a.status_code for a in others].count(204) == 2
    assert frames == ["a10201003c000000", "a103060001000000"]


async def test_no_downlink_is_204_and_the_uplink_still_goes_to_kafka(
    api: Api, owner: Account
) -> None:
    orbit_device = await add_device(api, owner)
    # An active device of another model sending through Sigfox: no downlink either.
    other = await add_device(api, owner, "json", device=new_id())
    now = int(time.time())
    for device in (orbit_device, other):
        body = {"device": device, "time": now, "data": "0102", "seqNumber": 5, "ack": "true"}
        answer = await sigfox(api, body)
        assert answer.status_code == 204, answer.text
        assert answer.content == b""
    uplinks = await read_until(
        api.settings,
        TOPIC_UPLINKS,
        lambda seen: {m["device"] for m in seen} >= {orbit_device, other},
    )
    assert len([m for m in uplinks if m["device"] in (orbit_device, other)]) == 2


async def test_a_seq_number_the_store_cannot_hold_is_422(api: Api, owner: Account) -> None:
    device = await add_device(api, owner)
    body = {"device": device, "time": 1700000000, "seqNumber": 2**31, "ack": True}
    answer = await sigfox(api, body)
    assert answer.status_code == 422, answer.text
    assert [d["field"] for d in answer.json()["error"]["details"]] == ["seqNumber"]


# --- The outbox --------------------------------------------------------------------------------


async def test_outbox_rows_survive_a_kafka_outage_and_leftovers_go_at_start(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Rows no relay could publish stay; the next API process to start publishes them."""
    name, url = new_schema(pg_server)
    try:
        async with await connect(url) as conn:
            await migrate(conn)
        settings = api_settings(
            database_url=url, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("leftovers")
        )
        await ensure_topics(kafka_server, [settings.topic(t) for t in ALL_TOPICS], 2)
        device = new_id()
        pool = await open_pool(url, size=2, name="outbox-test")
        try:
            async with pool.connection() as conn:
                messages = [(device, orjson.dumps({"device": device, "n": n})) for n in range(3)]
                await outbox.add(conn, TOPIC_UPLINKS, messages)
            closed = KafkaPublisher(f"127.0.0.1:{_closed_port()}", timeout=1.0)
            with pytest.raises(PublishFailed):
                await outbox.drain(pool, closed, settings.topic)
            await closed.stop()
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) AS n FROM kafka_outbox")
                assert await cur.fetchone() == {"n": 3}
        finally:
            await pool.close()
        async with running_api(settings) as second:
            uplinks = await read_until(
                settings, TOPIC_UPLINKS, lambda seen: len([m for m in seen if of(device)(m)]) >= 3
            )
            assert [m["n"] for m in uplinks if of(device)(m)] == [0, 1, 2]
            assert await outbox_drained(second)
    finally:
        drop_schema(pg_server, name)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failed_relay_keeps_the_request_answered(api: Api, owner: Account) -> None:
    """Kafka away: the downlink request is still answered from PostgreSQL, fast."""
    device = await add_device(api, owner)
    await queue(api, owner, device, {"led": 1})
    relay = api.ctx.outbox_relay
    real = relay._publisher
    relay._publisher = KafkaPublisher(f"127.0.0.1:{_closed_port()}", timeout=0.5)
    try:
        body = {"device": device, "time": int(time.time()), "seqNumber": 9, "ack": True}
        answer = await sigfox(api, body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {device: {"downlinkData": "a101060001000000"}}
        await asyncio.sleep(0.3)  # the relay tries, fails, keeps the rows
        assert await outbox_rows(api) >= 2  # the uplink and the downlink_sent event
    finally:
        await relay._publisher.stop()
        relay._publisher = real
        relay.wake()
    uplinks = await read_until(
        api.settings, TOPIC_UPLINKS, lambda seen: any(of(device)(m) for m in seen)
    )
    assert [m["meta"]["seq"] for m in uplinks if of(device)(m)] == [9]


# --- the request's own uplink, applied before it is answered ------------------------------------


def frame_of(answer: Any, device: str) -> str | None:
    if answer.status_code == 204:
        return None
    assert answer.status_code == 200, answer.text
    return str(answer.json()[device]["downlinkData"])


async def led_sent(api: Api, owner: Account, seq: int) -> tuple[str, int, Message]:
    """A new device with ``led=1`` in flight: sent in answer to request ``seq`` at ``t``.
    Returns the device, ``t`` and the body of a downlink request (without time and seq)."""
    device = await add_device(api, owner)
    await queue(api, owner, device, {"led": 1})
    t = int(time.time())
    request: Message = {"device": device, "data": "", "ack": True}
    sent = await sigfox(api, {**request, "time": t, "seqNumber": seq})
    assert frame_of(sent, device) == "a101060001000000"
    return device, t, request


async def test_a_request_that_is_the_second_uplink_carries_the_unanswered_update_again(
    api: Api, owner: Account
) -> None:
    device, t, request = await led_sent(api, owner, 10)
    # The first uplink after the send, as the worker counts it (no ack in it).
    async with await connect(api.database_url) as conn:
        await changes.note_uplinks(conn, [(device, 11, t + 600)])  # type: ignore[arg-type]
    # The second is a downlink request: led had no ack by then, so it goes again, in this answer.
    again = await sigfox(api, {**request, "time": t + 1200, "seqNumber": 12})
    assert frame_of(again, device) == "a102060001000000"
    state = await view(api, owner, device)
    assert [(p["param"], p["status"], p["seq"], p["attempts"]) for p in state["pending"]] == [
        ("led", "in_flight", 2, 1)
    ]
    # The worker, processing that request's uplink later, does not count it a second time.
    async with await connect(api.database_url) as conn:
        assert await changes.note_uplinks(conn, [(device, 12, t + 1200)]) == 0  # type: ignore[arg-type]
    assert (await view(api, owner, device))["pending"] == state["pending"]


async def test_a_request_carrying_an_ack_is_answered_after_the_ack(
    api: Api, owner: Account
) -> None:
    device, t, _ = await led_sent(api, owner, 20)
    await queue(api, owner, device, {"led": 0})  # rule 4: waits for the ack of led=1
    # The ack of seq 1 (led=1) rides a downlink request: the successor led=0 is sent at once.
    acking = {"device": device, "time": t + 600, "data": "1001060001", "seqNumber": 21}
    answer = await sigfox(api, {**acking, "ack": True})
    assert frame_of(answer, device) == "a102060000000000"
    state = await view(api, owner, device)
    assert state["active"]["led"] == 1
    assert [(p["value"], p["status"], p["seq"]) for p in state["pending"]] == [(0, "in_flight", 2)]
    events = [kind for kind, _ in await stored_events(api, device)]
    assert events[-2:] == ["param_acked", "downlink_sent"]
    # The ack agent, applying that uplink's ack later, finds it applied already.
    async with await connect(api.database_url) as conn:
        ack = changes.Ack(device, t + 600, 1, ((6, 1),), uplink_seq=21)
        assert await changes.apply_ack(conn, ack) == ()  # type: ignore[arg-type]
    assert (await view(api, owner, device))["pending"] == state["pending"]


async def test_a_request_answered_without_a_downlink_is_counted_once(
    api: Api, owner: Account
) -> None:
    device, t, request = await led_sent(api, owner, 30)
    # The next uplink asks for a downlink too; nothing is ready (led is in flight): 204. It is
    # the first uplink since led was sent, and the answer counted it.
    assert (
        frame_of(await sigfox(api, {**request, "time": t + 600, "seqNumber": 31}), device) is None
    )
    async with await connect(api.database_url) as conn:
        # The worker, seeing that uplink later, must not count it again (else: re-queued now).
        assert await changes.note_uplinks(conn, [(device, 31, t + 600)]) == 0  # type: ignore[arg-type]
        pending = (await view(api, owner, device))["pending"]
        assert [(p["status"], p["attempts"]) for p in pending] == [("in_flight", 0)]
        # The second uplink since the send is: led goes back to the queue.
        assert await changes.note_uplinks(conn, [(device, 32, t + 1200)]) == 1  # type: ignore[arg-type]
    pending = (await view(api, owner, device))["pending"]
    assert [(p["status"], p["attempts"]) for p in pending] == [("queued", 1)]
