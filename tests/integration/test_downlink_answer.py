"""The Sigfox downlink answer's transaction against a real PostgreSQL: its round trips, what it
keeps, and what it leaves behind when it refuses; and the callback's claim with its device check.

The round trips are counted from libpq's protocol trace: in pipeline mode psycopg sends a
``Flush`` each time it must wait for results (the answer's latency under load is made of those
waits; the old code, with psycopg's transaction blocks, sent six).
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus

from services.orbit.store import register
from services.platform.db import connection_kwargs
from services.platform.events import UplinkEnvelope
from services.uplinks import dedup
from services.uplinks.sigfox_downlink import DeviceUnavailable, answer_downlink_request
from tests.conftest import schema_with

T = 1700000000.0

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture(scope="module")
async def schema(pg_server: str) -> AsyncIterator[str]:
    migrations = ("0001_core.sql", "0003_orbit.sql", "0006_outbox.sql", "0009_uplink_journal.sql")
    async with schema_with(pg_server, migrations, "answer-owner") as url:
        yield url


@pytest.fixture
async def conn(schema: str) -> AsyncIterator[Conn]:
    # As the application's pools open them (services.platform.db.open_pool).
    async with await psycopg.AsyncConnection.connect(schema, **connection_kwargs()) as connection:
        yield connection


async def new_device(conn: Conn, *, active: bool = True, model: str = "orbit-t") -> str:
    device = secrets.token_hex(4).upper()
    await conn.execute(
        "INSERT INTO devices (id, model, network, owner_id, active)"
        " SELECT %s, %s, 'sigfox', id, %s FROM users WHERE username = 'answer-owner'",
        (device, model, active),
    )
    return device


def request(device: str, seq: int) -> UplinkEnvelope:
    return UplinkEnvelope(
        source="sigfox", device=device, received=T, payload_hex="010f08fc", meta={"seq": seq}
    )


async def answer(conn: Conn, device: str, seq: int) -> Any:
    return await answer_downlink_request(
        conn, request(device, seq), dedup_key=f"sigfox:{device}:{seq}", window_seconds=600, now=T
    )


async def count(conn: Conn, query: str, *args: Any) -> int:
    cur = await conn.execute(query, args)
    row = await cur.fetchone()
    assert row is not None
    return int(next(iter(row.values())))


async def waits_for_server(conn: Conn, device: str, seq: int) -> tuple[Any, int]:
    """The answer, and how many times the client waited for the server to give it."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            result = await answer(conn, device, seq)
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        sent = (line.rstrip("\n").split("\t")[1:4] for line in trace)
        flushes = sum(1 for message in sent if message == ["F", "4", "Flush"])
    return result, flushes


async def test_a_downlink_answer_waits_for_the_server_twice(conn: Conn) -> None:
    device = await new_device(conn)
    # Two downlinks' worth (two updates each): the first creates the rows the second finds.
    updates = {"sample_interval": 30, "batch_size": 3, "led": 1, "downlink_every": 12}
    await register(conn, device, updates, T - 60)
    assert (await answer(conn, device, 1)).frame_hex is not None

    got, waits = await waits_for_server(conn, device, 2)

    assert got.frame_hex is not None
    assert not got.duplicate
    # The reads (device, claim, lock, config, recorded answer), then the writes with COMMIT:
    # psycopg's transaction blocks would add a round trip each (BEGIN, SAVEPOINT, RELEASE...).
    assert waits == 2
    assert conn.info.transaction_status == TransactionStatus.IDLE
    replay, waits = await waits_for_server(conn, device, 2)
    assert (replay.frame_hex, replay.duplicate, waits) == (got.frame_hex, True, 2)


@pytest.mark.parametrize("reason", ["inactive_device", "unknown_device"])
async def test_a_refused_request_keeps_nothing_and_leaves_the_connection_idle(
    conn: Conn, reason: str
) -> None:
    if reason == "unknown_device":
        device = secrets.token_hex(4).upper()
    else:  # deactivated with an update pending: nothing may be planned or marked in flight
        device = await new_device(conn)
        await register(conn, device, {"led": 1}, T - 60)
        await conn.execute("UPDATE devices SET active = false WHERE id = %s", (device,))

    with pytest.raises(DeviceUnavailable) as refused:
        await answer(conn, device, 3)

    assert refused.value.reason == reason
    assert conn.info.transaction_status == TransactionStatus.IDLE
    key = f"sigfox:{device}:3"
    assert await count(conn, "SELECT count(*) FROM uplink_dedup WHERE key = %s", key) == 0
    assert await count(conn, "SELECT count(*) FROM kafka_outbox WHERE key = %s", device) == 0
    requests = "SELECT count(*) FROM orbit_downlink_requests WHERE device = %s"
    assert await count(conn, requests, device) == 0
    kinds = await conn.execute("SELECT type FROM device_events WHERE device = %s", (device,))
    assert [row["type"] for row in await kinds.fetchall()] == (
        ["param_queued"] if reason == "inactive_device" else []
    )
    in_flight = "SELECT count(*) FROM orbit_pending WHERE device = %s AND status = 'in_flight'"
    assert await count(conn, in_flight, device) == 0


async def test_a_database_error_rolls_the_answer_back(conn: Conn) -> None:
    device = await new_device(conn)
    await register(conn, device, {"led": 1}, T - 60)
    # The outbox insert (with the claim, in the first round trip) fails.
    await conn.execute(
        sql.SQL("ALTER TABLE kafka_outbox ADD CONSTRAINT no_test_keys CHECK (key <> {})").format(
            sql.Literal(device)
        )
    )
    try:
        with pytest.raises(psycopg.errors.CheckViolation):
            await answer(conn, device, 4)
        assert conn.info.transaction_status == TransactionStatus.IDLE
        key = f"sigfox:{device}:4"
        assert await count(conn, "SELECT count(*) FROM uplink_dedup WHERE key = %s", key) == 0
    finally:
        await conn.execute("ALTER TABLE kafka_outbox DROP CONSTRAINT no_test_keys")
    got = await answer(conn, device, 4)  # the network's retry is a new request
    assert got.frame_hex is not None
    assert not got.duplicate


@pytest.mark.parametrize(
    ("state", "expected"),
    [("active", (True, True)), ("inactive", (True, False)), ("unknown", (True, None))],
)
async def test_the_claim_reports_the_device_in_the_same_statement(
    conn: Conn, state: str, expected: tuple[bool, bool | None]
) -> None:
    if state == "unknown":
        device = secrets.token_hex(4).upper()
    else:
        device = await new_device(conn, active=state == "active")
    key = f"test:{device}"

    assert await dedup.claim_checking_device(conn, key, 600, device) == expected
    # A second sighting within the window is a duplicate, whatever the device.
    assert await dedup.claim_checking_device(conn, key, 600, device) == (False, expected[1])
