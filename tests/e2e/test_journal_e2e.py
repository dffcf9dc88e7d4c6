"""The intake journal through the whole pipeline: an accepted uplink is kept until the worker
has stored it, and one that the broker lost after acknowledging it (tansu restarted empty) is
published again by the worker and stored, once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from services.platform.events import UplinkEnvelope
from services.uplinks import dedup, journal
from tests.stack import Stack, eventually, stack_in_new_schema

REPLAY_AFTER = 1.0


@pytest.fixture(scope="module")
async def stack(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with stack_in_new_schema(
        pg_server,
        kafka=kafka_server,
        mqtt_url=None,
        prefix=f"j{uuid.uuid4().hex[:10]}.",
        data_dir=Path(tmp_path_factory.mktemp("journal")),
        journal_replay_after=REPLAY_AFTER,
        journal_replay_interval=0.5,
    ) as running:
        yield running


async def _query(stack: Stack, sql: str, *args: Any) -> list[dict[str, Any]]:
    assert stack.settings.database_url
    async with await psycopg.AsyncConnection.connect(
        stack.settings.database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        cur = await conn.execute(sql, args)
        return await cur.fetchall()


async def test_an_uplink_leaves_the_journal_once_stored(stack: Stack) -> None:
    headers = {"X-API-Key": stack.api_key}
    created = await stack.client.post(
        "/v1/devices", json={"id": "10A1", "model": "orbit-t"}, headers=headers
    )
    assert created.status_code == 201, created.text
    body = {"device": "10A1", "time": 1700000000, "data": "010f08fc0906", "seqNumber": 1}
    answer = await stack.client.post(
        "/callbacks/sigfox", json=body, headers={"X-Callback-Token": stack.token}
    )
    assert answer.status_code == 204, answer.text

    async def stored_and_forgotten() -> bool:
        points = await _query(stack, "SELECT count(*) AS n FROM points WHERE device = '10A1'")
        rows = await _query(stack, "SELECT count(*) AS n FROM uplink_journal WHERE key = '10A1'")
        return points[0]["n"] == 2 and rows[0]["n"] == 0

    assert await eventually(stored_and_forgotten, timeout=15)


async def test_an_uplink_the_broker_lost_is_replayed_and_stored_once(stack: Stack) -> None:
    headers = {"X-API-Key": stack.api_key}
    created = await stack.client.post(
        "/v1/devices", json={"id": "10A2", "model": "orbit-t"}, headers=headers
    )
    assert created.status_code == 201, created.text
    # Accepted (claimed and journaled, answered 204), then lost by the broker: it never
    # reaches the worker through Kafka.
    envelope = UplinkEnvelope(
        source="sigfox",
        device="10A2",
        received=1700000600.0,
        payload_hex="010f08fc0906",
        meta={"seq": 3},
    )
    assert stack.settings.database_url
    async with await psycopg.AsyncConnection.connect(
        stack.settings.database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        assert await dedup.claim(conn, "sigfox:10A2:3", 600, entry=journal.journal_entry(envelope))
    retry = await stack.client.post(
        "/callbacks/sigfox",
        json={"device": "10A2", "time": 1700000600, "data": "010f08fc0906", "seqNumber": 3},
        headers={"X-Callback-Token": stack.token},
    )
    assert retry.status_code == 204  # a duplicate: the first copy is in the journal

    async def stored() -> list[dict[str, Any]] | None:
        rows = await _query(
            stack, "SELECT time, value FROM points WHERE device = '10A2' ORDER BY time"
        )
        return rows if len(rows) == 2 else None

    rows = await eventually(stored, timeout=REPLAY_AFTER + 15)
    assert [r["value"] for r in rows] == [23.0, 23.1]

    async def forgotten() -> bool:
        left = await _query(stack, "SELECT count(*) AS n FROM uplink_journal WHERE key = '10A2'")
        return left[0]["n"] == 0

    assert await eventually(forgotten, timeout=10)
