"""Orbit store against a real PostgreSQL: the full cycle, replays, locking, the budget.

On the suite's PostgreSQL (``pg_server``: ``HIVEPIPE_TEST_DATABASE_URL`` or one it starts); each
module run gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from services.orbit import InvalidParam, decode_downlink
from services.orbit.store import (
    UnknownDevice,
    answer_downlink_request,
    apply_ack_event,
    delete_pending,
    load_config,
    note_uplink,
    orbit_view,
    register,
)
from services.platform.db import connection_kwargs
from tests.conftest import schema_with
from tests.samples import sample

T = 1700000000.0
DAY = 86400.0

Conn = psycopg.AsyncConnection[Any]


async def _connect(url: str) -> Conn:
    # As the application's pools open them (services.platform.db.open_pool).
    return await psycopg.AsyncConnection.connect(url, **connection_kwargs())


@pytest.fixture(scope="module")
async def schema(pg_server: str) -> AsyncIterator[str]:
    """The URL of a schema of this module's own, with the core and Orbit tables (the Orbit
    migration applied twice: it is idempotent)."""
    migrations = ("0001_core.sql", "0003_orbit.sql", "0003_orbit.sql")
    async with schema_with(pg_server, migrations, "orbit-owner") as url:
        yield url


@pytest.fixture
async def conn(schema: str) -> AsyncIterator[Conn]:
    async with await _connect(schema) as connection:
        yield connection


async def new_device(conn: Conn, model: str = "orbit-t") -> str:
    device = secrets.token_hex(4).upper()
    await conn.execute(
        "INSERT INTO devices (id, model, network, owner_id)"
        " SELECT %s, %s, 'sigfox', id FROM users WHERE username = 'orbit-owner'",
        (device, model),
    )
    return device


async def events(conn: Conn, device: str) -> list[tuple[str, dict[str, Any]]]:
    cur = await conn.execute(
        "SELECT type, data FROM device_events WHERE device = %s ORDER BY id", (device,)
    )
    return [(row["type"], row["data"]) for row in await cur.fetchall()]


async def test_full_cycle_register_downlink_replay_ack(conn: Conn) -> None:
    device = await new_device(conn)
    expected = sample("sigfox-downlink-answer.json")["1A2B3C"]

    outcomes = await register(conn, device, {"sample_interval": 30, "led": 1}, T)
    frame = await answer_downlink_request(conn, device, 2, T + 600)
    replayed = await answer_downlink_request(conn, device, 2, T + 660)
    in_flight = await orbit_view(conn, device, T + 660)
    await apply_ack_event(conn, device, 1, [(0x01, 30), (0x06, 1)], T + 1200, sigfox_seq_number=3)
    await note_uplink(conn, device, 3, T + 1200)
    done = await orbit_view(conn, device, T + 1200)

    assert [o.kind for o in outcomes] == ["param_queued", "param_queued"]
    assert frame == expected["downlinkData"] == "a20101001e060001"
    assert replayed == frame
    assert in_flight["pending"] == [
        {"param": "sample_interval", "value": 30, "status": "in_flight", "queued": T,
         "attempts": 0, "seq": 1},
        {"param": "led", "value": 1, "status": "in_flight", "queued": T, "attempts": 0, "seq": 1},
    ]  # fmt: skip
    assert in_flight["downlinks_left_24h"] == 3
    assert done == {
        "device": device,
        "model": "orbit-t",
        "active": {"sample_interval": 30, "batch_size": 4, "temp_high": 40, "temp_low": -10,
                   "led": 1, "downlink_every": 24},
        "pending": [],
        "downlinks_left_24h": 3,
    }  # fmt: skip
    assert [kind for kind, _ in await events(conn, device)] == [
        "param_queued", "param_queued", "downlink_sent", "param_acked", "param_acked",
    ]  # fmt: skip
    sent = (await events(conn, device))[2][1]
    assert sent == {
        "seq": 1,
        "frame": "a20101001e060001",
        "params": {"sample_interval": 30, "led": 1},
        "sigfox_seq_number": 2,
    }


async def test_new_device_has_the_factory_defaults_of_its_model(conn: Conn) -> None:
    device = await new_device(conn, "orbit-th")

    view = await orbit_view(conn, device.lower(), T)
    config = await load_config(conn, device)

    assert view["device"] == device
    assert view["active"] == {
        "sample_interval": 15, "batch_size": 4, "temp_high": 40, "temp_low": -10,
        "humidity_high": 90, "led": 0, "downlink_every": 24,
    }  # fmt: skip
    assert (view["pending"], view["downlinks_left_24h"]) == ([], 4)
    assert (config.model, config.seq, config.pending) == ("orbit-th", 0, ())


async def test_unknown_and_non_orbit_devices_are_unknown(conn: Conn) -> None:
    lorawan = await new_device(conn, "lorawan-lpp")

    with pytest.raises(UnknownDevice, match="no such device"):
        await orbit_view(conn, "FFFFFFFFFF", T)
    with pytest.raises(UnknownDevice, match="not an Orbit model"):
        await register(conn, lorawan, {"led": 1}, T)


async def test_an_invalid_param_registers_nothing(conn: Conn) -> None:
    device = await new_device(conn, "orbit-th")

    with pytest.raises(InvalidParam) as caught:
        await register(conn, device, {"led": 1, "batch_size": 4, "temp_high": 30.505}, T)

    assert len(caught.value.details) == 2
    assert (await orbit_view(conn, device, T))["pending"] == []
    assert await events(conn, device) == []


async def test_rules_answer_in_events_and_view(conn: Conn) -> None:
    device = await new_device(conn, "orbit-th")

    first = await register(conn, device, {"temp_high": 30.5, "humidity_high": 80}, T)
    second = await register(conn, device, {"temp_high": 31, "humidity_high": 90, "led": 0}, T + 1)
    view = await orbit_view(conn, device, T + 2)

    assert [o.kind for o in first] == ["param_queued", "param_queued"]
    assert [o.kind for o in second] == ["param_replaced", "param_dropped", "unchanged"]
    assert view["pending"] == [
        {"param": "temp_high", "value": 31, "status": "queued", "queued": T, "attempts": 0,
         "seq": None}
    ]  # fmt: skip
    assert [kind for kind, _ in await events(conn, device)] == [
        "param_queued", "param_queued", "param_replaced", "param_dropped",
    ]  # fmt: skip


@pytest.mark.parametrize("round_", range(5))
async def test_concurrent_requests_send_distinct_seqs_and_updates(schema: str, round_: int) -> None:
    async with await _connect(schema) as a, await _connect(schema) as b:
        device = await new_device(a)
        await register(a, device, {"sample_interval": 30, "batch_size": 2, "led": 1}, T)
        await register(a, device, {"temp_high": 25, "temp_low": 5}, T + 1)

        frames = await asyncio.gather(
            answer_downlink_request(a, device, 10, T + 600),
            answer_downlink_request(b, device, 11, T + 600),
        )

        decoded = [decode_downlink(bytes.fromhex(f)) for f in frames if f is not None]
        assert sorted(seq for seq, _ in decoded) == [1, 2]
        sent = [name for _, updates in decoded for name, _ in updates]
        assert sorted(sent) == ["batch_size", "sample_interval", "temp_high", "temp_low"]
        view = await orbit_view(a, device, T + 600)
        assert [(p["param"], p["status"], p["seq"]) for p in view["pending"]] == [
            ("sample_interval", "in_flight", 2), ("batch_size", "in_flight", 2),
            ("temp_high", "in_flight", 1), ("temp_low", "in_flight", 1), ("led", "queued", None),
        ]  # fmt: skip
        assert view["downlinks_left_24h"] == 2


async def test_concurrent_duplicates_of_one_request_get_one_downlink(schema: str) -> None:
    async with await _connect(schema) as a, await _connect(schema) as b:
        device = await new_device(a)
        await register(a, device, {"sample_interval": 30, "batch_size": 2, "led": 1}, T)

        frames = await asyncio.gather(
            answer_downlink_request(a, device, 5, T + 600),
            answer_downlink_request(b, device, 5, T + 600),
        )

        assert frames[0] == frames[1] == "a20101001e020002"
        view = await orbit_view(a, device, T + 600)
        assert view["downlinks_left_24h"] == 3
        assert [p["status"] for p in view["pending"]] == ["in_flight", "in_flight", "queued"]


async def test_no_downlink_answer_is_replayed_too(conn: Conn) -> None:
    device = await new_device(conn)

    first = await answer_downlink_request(conn, device, 7, T)
    await register(conn, device, {"led": 1}, T + 10)
    retry = await answer_downlink_request(conn, device, 7, T + 60)
    next_request = await answer_downlink_request(conn, device, 8, T + 600)

    assert (first, retry) == (None, None)
    assert next_request == "a101060001000000"


async def test_unanswered_downlink_is_requeued_counting_uplinks_once(conn: Conn) -> None:
    device = await new_device(conn)
    await register(conn, device, {"led": 1}, T)
    assert await answer_downlink_request(conn, device, 1, T + 600) == "a101060001000000"

    request = await note_uplink(conn, device, 1, T + 600)  # the request itself: not counted
    first = await note_uplink(conn, device, 2, T + 1200)
    replay = await note_uplink(conn, device, 2, T + 1200)
    second = await note_uplink(conn, device, 3, T + 1800)
    view = await orbit_view(conn, device, T + 1800)

    assert (request, first, replay) == ((), (), ())
    assert [(o.kind, o.attempts) for o in second] == [("param_requeued", 1)]
    assert view["pending"] == [
        {"param": "led", "value": 1, "status": "queued", "queued": T, "attempts": 1, "seq": 1}
    ]
    # The second send gets seq 2; its late ack (or the first's) still answers it.
    assert await answer_downlink_request(conn, device, 4, T + 2400) == "a102060001000000"


async def test_three_unanswered_sends_fail_until_re_registered(conn: Conn) -> None:
    device = await new_device(conn)
    await register(conn, device, {"led": 1}, T)
    t, uplink = T, 0
    for _ in range(3):
        uplink += 1
        t += 600
        assert await answer_downlink_request(conn, device, uplink, t) is not None
        for _ in range(2):
            uplink += 1
            t += 600
            outcomes = await note_uplink(conn, device, uplink, t)

    failed = await orbit_view(conn, device, t)
    again = await register(conn, device, {"led": 1}, t)

    assert [o.kind for o in outcomes] == ["param_failed"]
    assert [(p["status"], p["attempts"]) for p in failed["pending"]] == [("failed", 3)]
    assert [o.kind for o in again] == ["param_queued"]
    assert [
        (p["status"], p["attempts"]) for p in (await orbit_view(conn, device, t))["pending"]
    ] == [("queued", 0)]


async def test_budget_of_four_downlinks_per_rolling_day(conn: Conn) -> None:
    device = await new_device(conn)
    values = [30, 31, 32, 33, 34]
    frames = []
    for i, value in enumerate(values):
        await register(conn, device, {"sample_interval": value}, T + i * 600)
        frame = await answer_downlink_request(conn, device, 100 + i, T + i * 600 + 1)
        frames.append(frame)
        if frame is not None:
            seq, _ = decode_downlink(bytes.fromhex(frame))
            await apply_ack_event(conn, device, seq, [(0x01, value)], T + i * 600 + 2)

    assert [f is not None for f in frames] == [True, True, True, True, False]
    assert (await orbit_view(conn, device, T + 2401))["downlinks_left_24h"] == 0
    assert (await orbit_view(conn, device, T + DAY + 1))["downlinks_left_24h"] == 1
    assert await answer_downlink_request(conn, device, 200, T + DAY + 1) == "a105010022000000"


async def test_replayed_ack_is_applied_once(conn: Conn) -> None:
    device = await new_device(conn)
    await apply_ack_event(conn, device, 9, [(0x06, 1)], T, sigfox_seq_number=40)
    await apply_ack_event(conn, device, 10, [(0x06, 0)], T + 600, sigfox_seq_number=41)

    replay = await apply_ack_event(conn, device, 9, [(0x06, 1)], T, sigfox_seq_number=40)

    assert replay == ()
    assert (await load_config(conn, device)).active["led"] == 0


async def test_delete_pending(conn: Conn) -> None:
    device = await new_device(conn)
    await register(conn, device, {"led": 1}, T)

    assert await delete_pending(conn, device, "led", now=T + 1) is True
    assert await delete_pending(conn, device, "led", now=T + 2) is False
    with pytest.raises(InvalidParam):
        await delete_pending(conn, device, "colour")
    assert (await orbit_view(conn, device, T + 3))["pending"] == []
    assert (await events(conn, device))[-1] == (
        "param_dropped",
        {"param": "led", "value": 1, "reason": "deleted by an operator"},
    )
