"""The intake journal against real PostgreSQL and Kafka: a claim is a promise only once its uplink
is durable. A process that dies between its claim and Kafka's acknowledgement leaves the uplink
in the journal, the network's retry is then a duplicate, and the replay publishes it; a publish
that fails releases both the claim and the row; the row lives until stored (journal kept) or
until Kafka's acknowledgement (journal off)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from services.platform.db import open_pool
from services.platform.events import TOPIC_DEAD_LETTER, TOPIC_UPLINKS, UplinkEnvelope
from services.platform.kafka import KafkaPublisher, PublishFailed, ensure_topics
from services.uplinks import dedup, journal
from services.uplinks.accept import accept_uplink
from tests.integration.ingest_support import read_topic, register_devices


def _envelope(device: str, seq: int) -> UplinkEnvelope:
    return UplinkEnvelope(
        source="sigfox",
        device=device,
        received=1700000000.0,
        payload_hex="010f08fc0906",
        meta={"seq": seq},
    )


async def _rows(url: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as c:
        cur = await c.execute("SELECT id, key, replays FROM uplink_journal ORDER BY accepted")
        return await cur.fetchall()


@pytest.fixture
async def topics(kafka_server: str, topic_prefix: str) -> dict[str, str]:
    names = {t: f"{topic_prefix}{t}" for t in (TOPIC_UPLINKS, TOPIC_DEAD_LETTER)}
    await ensure_topics(kafka_server, names.values(), 1)
    return names


async def test_a_claim_whose_process_died_before_kafka_is_replayed(
    migrated_url: str, kafka_server: str, topics: dict[str, str]
) -> None:
    register_devices(migrated_url, [("ABC001", "orbit-t", True)])
    envelope = _envelope("ABC001", 1)
    pool = await open_pool(migrated_url, size=2)
    publisher = KafkaPublisher(kafka_server)
    try:
        # The API claimed and journaled the uplink, then died before Kafka had it.
        async with pool.connection() as conn:
            claimed, active = await dedup.claim_checking_device(
                conn, "sigfox:ABC001:1", 600, "ABC001", entry=journal.journal_entry(envelope)
            )
        assert (claimed, active) == (True, True)
        # The network's retry: a duplicate (the first copy is durable, in the journal).
        retry = await accept_uplink(
            _envelope("ABC001", 1),
            dedup_key="sigfox:ABC001:1",
            pool=pool,
            publisher=publisher,
            topic=topics[TOPIC_UPLINKS],
            window_seconds=600,
            dead_letter_topic=topics[TOPIC_DEAD_LETTER],
        )
        assert retry.duplicate
        assert read_topic(kafka_server, topics[TOPIC_UPLINKS]) == []
        # The worker's replay publishes it, and keeps the row until the uplink is stored.
        replayed = await journal.replay_due(
            pool, publisher, lambda name: topics[name], older_than=0
        )
        assert replayed == 1
        [published] = read_topic(kafka_server, topics[TOPIC_UPLINKS])
        assert published["id"] == envelope.id
        assert published["device"] == "ABC001"
        assert [(r["id"], r["replays"]) for r in await _rows(migrated_url)] == [(envelope.id, 1)]
        # Not replayed again before ``older_than`` has passed since.
        assert (
            await journal.replay_due(pool, publisher, lambda name: topics[name], older_than=60) == 0
        )
        async with pool.connection() as conn:
            await journal.forget(conn, [envelope.id])
        assert await _rows(migrated_url) == []
    finally:
        await publisher.stop()
        await pool.close()


@pytest.mark.parametrize("keep_journal", [True, False])
async def test_the_row_lives_until_stored_or_until_kafka_has_it(
    migrated_url: str, kafka_server: str, topics: dict[str, str], keep_journal: bool
) -> None:
    register_devices(migrated_url, [("ABC002", "orbit-t", True), ("ABC003", "orbit-t", False)])
    pool = await open_pool(migrated_url, size=2)
    publisher = KafkaPublisher(kafka_server)
    try:
        envelope = _envelope("ABC002", 5)
        accepted = await accept_uplink(
            envelope,
            dedup_key="sigfox:ABC002:5",
            pool=pool,
            publisher=publisher,
            topic=topics[TOPIC_UPLINKS],
            window_seconds=600,
            dead_letter_topic=topics[TOPIC_DEAD_LETTER],
            keep_journal=keep_journal,
        )
        assert not accepted.duplicate
        kept = [r["id"] for r in await _rows(migrated_url)]
        assert kept == ([envelope.id] if keep_journal else [])
        # An inactive device's uplink goes to dead-letter and is never journaled.
        inactive = await accept_uplink(
            _envelope("ABC003", 1),
            dedup_key="sigfox:ABC003:1",
            pool=pool,
            publisher=publisher,
            topic=topics[TOPIC_UPLINKS],
            window_seconds=600,
            dead_letter_topic=topics[TOPIC_DEAD_LETTER],
            keep_journal=keep_journal,
        )
        assert inactive.dead_letter == "inactive_device"
        assert [r["id"] for r in await _rows(migrated_url)] == kept
    finally:
        await publisher.stop()
        await pool.close()


async def test_a_failed_publish_releases_the_claim_and_its_row(migrated_url: str) -> None:
    register_devices(migrated_url, [("ABC004", "orbit-t", True)])
    pool = await open_pool(migrated_url, size=2)
    dead = KafkaPublisher("127.0.0.1:9", timeout=1.0)  # nothing listens there
    try:
        with pytest.raises(PublishFailed):
            await accept_uplink(
                _envelope("ABC004", 9),
                dedup_key="sigfox:ABC004:9",
                pool=pool,
                publisher=dead,
                topic="nowhere",
                window_seconds=600,
                dead_letter_topic="nowhere-dead",
            )
        assert await _rows(migrated_url) == []
        async with pool.connection() as conn:
            # The network's retry is accepted as new.
            assert await dedup.claim(conn, "sigfox:ABC004:9", 600)
    finally:
        await pool.close()


async def test_a_replay_publishes_each_due_row_once(
    migrated_url: str, kafka_server: str, topics: dict[str, str]
) -> None:
    envelopes = [_envelope("ABC005", seq) for seq in range(5)]
    pool = await open_pool(migrated_url, size=2)
    publisher = KafkaPublisher(kafka_server)
    try:
        async with pool.connection() as conn:
            await journal.record(conn, [journal.journal_entry(e) for e in envelopes])
        # Batches smaller than the rows due: a row re-armed by one batch is not due in the next.
        replayed = await journal.replay_due(
            pool, publisher, lambda name: topics[name], older_than=0, limit=2
        )
        assert replayed == 5
        assert sorted(r["replays"] for r in await _rows(migrated_url)) == [1] * 5
        published = read_topic(kafka_server, topics[TOPIC_UPLINKS])
        assert sorted(m["id"] for m in published) == sorted(e.id for e in envelopes)
    finally:
        await publisher.stop()
        await pool.close()


async def test_recorded_rows_keep_their_message_byte_for_byte(migrated_url: str) -> None:
    # The rows travel as one JSON parameter: escapes, non-ASCII text and a repeated id come
    # back exactly as given (the value is what the replay publishes).
    envelope = UplinkEnvelope(
        source="mqtt",
        device="ABC006",
        received=1700000000.25,
        payload_json={"note": 'quote " backslash \\ tab \t é 温度 😀', "n": [1, 2.5, None]},
        meta={"seq": 7},
    )
    entries = [journal.journal_entry(envelope), journal.journal_entry(_envelope("ABC007", 1))]
    pool = await open_pool(migrated_url, size=1)
    try:
        async with pool.connection() as conn:
            await journal.record(conn, entries)
            await journal.record(conn, entries[:1])  # already there: left as it is
            cur = await conn.execute("SELECT id, key, value FROM uplink_journal ORDER BY key")
            rows = await cur.fetchall()
    finally:
        await pool.close()
    assert [(r["id"], r["key"], bytes(r["value"])) for r in rows] == [
        (id_, key, value) for id_, (key, value) in entries
    ]
