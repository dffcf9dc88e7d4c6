"""The webhook store against a real PostgreSQL: registrations, the hot path's cache, the retry
queue (SKIP LOCKED claims, leases), settled batches, the attempt log; and one batch through the
real HTTP sender to a real receiver, with dead letters on a real Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from standardwebhooks import Webhook

from services.devices import store as devices_store
from services.platform.db import open_pool
from services.platform.events import TOPIC_DEAD_LETTER, dumps
from services.platform.kafka import KafkaPublisher, ensure_topics
from services.webhooks import (
    DisablePolicy,
    HttpWebhookSender,
    RetryPolicy,
    WebhookRules,
    generate_secret,
    parse_cidrs,
)
from services.webhooks.attempts import AttemptLog, list_deliveries, prune_deliveries
from services.webhooks.batches import finish_batch, prepare_fresh, prepare_retries, send_batch
from services.webhooks.delivery_store import PgDeliveryStore, persist_settlement
from services.webhooks.directory import WebhookDirectory
from services.webhooks.model import (
    AttemptRecord,
    Delivery,
    HealthChange,
    Hook,
    RetryRow,
    Settlement,
)
from services.webhooks.registrations import (
    TooManyWebhooks,
    WebhookExists,
    create_webhook,
    delete_webhook,
    drop_former_owners_webhooks,
    list_webhooks,
    webhook_body,
)
from services.webhooks.retry_queue import claim_due_retries, schedule_redelivery
from tests.servers import http_receiver

Conn = psycopg.AsyncConnection[dict[str, Any]]


async def connect(url: str) -> Conn:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


@pytest.fixture
async def conn(migrated_url: str) -> AsyncIterator[Conn]:
    async with await connect(migrated_url) as c:
        yield c


async def user(conn: Conn, name: str | None = None) -> int:
    cur = await conn.execute(
        "INSERT INTO users (username) VALUES (%s) RETURNING id", (name or uuid.uuid4().hex[:10],)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def device(conn: Conn, owner: int, device_id: str | None = None) -> str:
    device_id = device_id or f"{uuid.uuid4().int % 0xFFFFFF:06X}"
    await conn.execute(
        "INSERT INTO devices (id, model, network, owner_id) VALUES (%s, 'orbit-t', 'sigfox', %s)",
        (device_id, owner),
    )
    return device_id


async def webhook(conn: Conn, dev: str, owner: int, url: str = "https://r.example/h") -> Hook:
    row = await create_webhook(
        conn, device=dev, owner_id=owner, url=url, secret=generate_secret(), max_per_device=5
    )
    cur = await conn.execute("SELECT secret FROM webhooks WHERE id = %s", (row["id"],))
    secret = (await cur.fetchone() or {})["secret"]
    return Hook(row["id"], dev, url, secret, owner)


def record(hook_id: int, n: int, at: float | None = None) -> AttemptRecord:
    return AttemptRecord(
        hook_id, at or time.time(), 1, "delivered", "delivered", 200, 1.5, None, f"m{n}", "{}"
    )


def retry_row(hook: Hook, msg: str, attempts: int = 1, delay: float = 0.0) -> RetryRow:
    return RetryRow(hook.id, hook.device, msg, '{"v": 1}', attempts, delay, 503, "http: 503")


async def retry_state(conn: Conn, hook_id: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT message_id, attempts, due_at > now() AS later FROM webhook_retries"
        " WHERE webhook_id = %s ORDER BY message_id",
        (hook_id,),
    )
    return await cur.fetchall()


# --- Registrations -------------------------------------------------------------------------------


async def test_the_limit_per_device_holds_under_concurrent_registrations(
    conn: Conn, migrated_url: str
) -> None:
    owner = await user(conn)
    dev = await device(conn, owner)
    connections = [await connect(migrated_url) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(
                create_webhook(
                    c,
                    device=dev,
                    owner_id=owner,
                    url=f"https://r.example/{i}",
                    secret=generate_secret(),
                    max_per_device=5,
                )
                for i, c in enumerate(connections)
            ),
            return_exceptions=True,
        )
    finally:
        for c in connections:
            await c.close()
    assert sum(isinstance(r, dict) for r in results) == 5
    assert sum(isinstance(r, TooManyWebhooks) for r in results) == 3
    listed = await list_webhooks(conn, device=dev, owner_id=owner)
    assert len(listed) == 5
    with pytest.raises(WebhookExists):
        await create_webhook(
            conn,
            device=dev,
            owner_id=owner,
            url=listed[0]["url"],
            secret="whsec_x",
            max_per_device=10,
        )
    body = webhook_body(listed[0])
    assert "secret" not in body
    assert (body["disabled"], body["pending_retries"], body["failures"]) == (False, 0, 0)
    assert await delete_webhook(conn, webhook_id=listed[0]["id"], device=dev, owner_id=owner)
    assert not await delete_webhook(conn, webhook_id=listed[0]["id"], device=dev, owner_id=owner)
    other = await user(conn)
    assert not await delete_webhook(conn, webhook_id=listed[1]["id"], device=dev, owner_id=other)


async def test_deleting_the_device_deletes_its_webhooks_and_their_queue(conn: Conn) -> None:
    owner = await user(conn)
    dev = await device(conn, owner)
    hook = await webhook(conn, dev, owner)
    await persist_settlement(conn, Settlement(retries=[retry_row(hook, "m1")]))
    await conn.execute("DELETE FROM devices WHERE id = %s", (dev,))
    cur = await conn.execute("SELECT count(*) AS n FROM webhook_retries")
    assert (await cur.fetchone() or {})["n"] == 0


# --- The hot path's lookup -----------------------------------------------------------------------


async def test_the_directory_caches_and_sees_only_the_current_owners_active_webhooks(
    conn: Conn,
) -> None:
    owner, other = await user(conn), await user(conn)
    dev, lonely = await device(conn, owner), await device(conn, owner)
    a = await webhook(conn, dev, owner, "https://r.example/a")
    b = await webhook(conn, dev, owner, "https://r.example/b")
    await conn.execute("UPDATE webhooks SET consecutive_failures = 3 WHERE id = %s", (b.id,))
    directory = WebhookDirectory(ttl=60)
    found = await directory.lookup(conn, {dev, lonely, "NOPE"})
    assert found == {dev: (a, b), lonely: (), "NOPE": ()}
    assert directory.failing == {b.id}
    # Cached: the worker's own writes of a webhook's health do not reload it (b's failures
    # reset here are not seen before the TTL).
    await conn.execute("UPDATE webhooks SET consecutive_failures = 0 WHERE id = %s", (b.id,))
    assert (await directory.lookup(conn, {dev}))[dev] == (a, b)
    assert directory.failing == {b.id}
    # A webhook disabled (by another worker) is seen at once.
    await conn.execute("UPDATE webhooks SET disabled_at = now() WHERE id = %s", (a.id,))
    assert (await directory.lookup(conn, {dev}))[dev] == (b,)
    # Without a TTL, the database says: disabled webhooks and a former owner's are left out.
    fresh = WebhookDirectory(ttl=0)
    assert (await fresh.lookup(conn, {dev}))[dev] == (b,)
    await conn.execute("UPDATE devices SET owner_id = %s WHERE id = %s", (other, dev))
    assert (await fresh.lookup(conn, {dev}))[dev] == ()
    assert await drop_former_owners_webhooks(conn) == 2
    # A disabled webhook noted by the worker drops the device's entry at once.
    directory.note(Settlement(), disabled=[(a.id, dev)])
    assert (await directory.lookup(conn, {dev}))[dev] == ()


async def test_a_delete_an_owner_change_or_a_removal_reaches_every_workers_cache_at_once(
    conn: Conn, migrated_url: str
) -> None:
    """Issue #19: with the webhooks cached for the TTL, a device deleted and registered again by
    another tenant had the new owner's points POSTed to the former owner's receiver, signed
    with the former owner's secret. A change made through the API (its own connection) is seen
    by every worker's next lookup, however long their TTL."""
    owner, other = await user(conn), await user(conn)
    removed_from, moved, deleted = [await device(conn, owner) for _ in range(3)]
    removed = await webhook(conn, removed_from, owner, "https://r.example/removed")
    kept = await webhook(conn, removed_from, owner, "https://r.example/kept")
    moved_hook = await webhook(conn, moved, owner)
    old = await webhook(conn, deleted, owner)
    everything = {removed_from, moved, deleted}
    workers = [WebhookDirectory(ttl=3600), WebhookDirectory(ttl=3600)]
    for worker in workers:
        assert await worker.lookup(conn, everything) == {
            removed_from: (removed, kept),
            moved: (moved_hook,),
            deleted: (old,),
        }
    async with await connect(migrated_url) as api:
        assert await delete_webhook(api, webhook_id=removed.id, device=removed_from, owner_id=owner)
        await devices_store.update_device(api, moved, owner_id=other)
        await devices_store.delete_device(api, deleted)
        await device(api, other, deleted)  # registered again, by another tenant
        new = await webhook(api, deleted, other, "https://r.example/new")
    for worker in workers:
        assert await worker.lookup(conn, everything) == {
            removed_from: (kept,),
            moved: (),
            deleted: (new,),
        }


# --- The retry queue ----------------------------------------------------------------------------


async def test_claims_skip_what_another_worker_holds_and_a_lease_expires(
    conn: Conn, migrated_url: str
) -> None:
    owner = await user(conn)
    hook = await webhook(conn, await device(conn, owner), owner)
    later = retry_row(hook, "later", delay=3600)
    await persist_settlement(
        conn, Settlement(retries=[retry_row(hook, f"m{i}") for i in range(5)] + [later])
    )
    async with await connect(migrated_url) as other:
        async with conn.transaction():
            mine, orphans = await claim_due_retries(conn, limit=3, lease=0.5)
            # The rows are locked by this open transaction: the other worker skips them.
            theirs, _ = await asyncio.wait_for(
                claim_due_retries(other, limit=10, lease=0.5), timeout=5
            )
        assert orphans == []
        assert len(mine) == 3
        assert len(theirs) == 2
        assert {d.message_id for d in mine} | {d.message_id for d in theirs} == {
            f"m{i}" for i in range(5)
        }
        assert all(d.queued and d.attempts == 1 and d.hook == hook for d in mine)
        # Claimed: not due again before the lease is over (the worker may have died).
        assert await claim_due_retries(other, limit=10, lease=0.5) == ([], [])
        await asyncio.sleep(0.7)
        again, _ = await claim_due_retries(other, limit=10, lease=60)
        assert len(again) == 5
        assert "later" not in {d.message_id for d in again}


async def test_claims_leave_out_the_webhooks_being_sent_to(conn: Conn) -> None:
    owner = await user(conn)
    slow = await webhook(conn, await device(conn, owner), owner)
    other = await webhook(conn, await device(conn, owner), owner)
    rows = [retry_row(slow, f"s{i}") for i in range(3)] + [retry_row(other, "o")]
    await persist_settlement(conn, Settlement(retries=rows))
    claimed, _ = await claim_due_retries(conn, limit=10, lease=60, exclude=[slow.id])
    assert [d.message_id for d in claimed] == ["o"]
    claimed, _ = await claim_due_retries(conn, limit=10, lease=60, exclude=[])
    assert sorted(d.message_id for d in claimed) == ["s0", "s1", "s2"]


async def test_claimed_retries_of_a_disabled_webhook_come_back_as_orphans(conn: Conn) -> None:
    owner = await user(conn)
    hook = await webhook(conn, await device(conn, owner), owner)
    await persist_settlement(conn, Settlement(retries=[retry_row(hook, "m1")]))
    await conn.execute(
        "UPDATE webhooks SET disabled_at = now(), disabled_reason = 'gone: 410' WHERE id = %s",
        (hook.id,),
    )
    ready, orphans = await claim_due_retries(conn, limit=10, lease=60)
    assert ready == []
    assert [(d.message_id, why) for d, why in orphans] == [("m1", "webhook disabled (gone: 410)")]


# --- Settled batches -----------------------------------------------------------------------------


async def test_a_settled_batch_updates_the_queue_and_the_webhooks_health(conn: Conn) -> None:
    owner = await user(conn)
    dev = await device(conn, owner)
    hook = await webhook(conn, dev, owner)
    await persist_settlement(
        conn, Settlement(retries=[retry_row(hook, "a", attempts=3), retry_row(hook, "b")])
    )
    # A replayed fresh attempt (1) does not reset a point further along its schedule (3).
    await persist_settlement(
        conn,
        Settlement(
            retries=[retry_row(hook, "a", attempts=1, delay=3600), retry_row(hook, "b", 2, 3600)],
            finished=[],
        ),
    )
    assert await retry_state(conn, hook.id) == [
        {"message_id": "a", "attempts": 3, "later": False},
        {"message_id": "b", "attempts": 2, "later": True},
    ]
    await persist_settlement(conn, Settlement(finished=[(hook.id, "a")]))
    assert [r["message_id"] for r in await retry_state(conn, hook.id)] == ["b"]

    failures = HealthChange(failures=2, failing_since=1000.0, failed=2, last_error="http: 503")
    await persist_settlement(conn, Settlement(health={hook.id: failures}))
    await persist_settlement(conn, Settlement(health={hook.id: failures}))
    [row] = await list_webhooks(conn, device=dev, owner_id=owner)
    assert (row["consecutive_failures"], row["failing_since"].timestamp(), row["failures"]) == (
        4,
        1000.0,
        4,
    )
    assert row["last_error"] == "http: 503"
    assert row["pending_retries"] == 1
    # A delivery resets the run: what failed after it starts a new one.
    recovered = HealthChange(reset=True, failures=1, failing_since=2000.0, failed=1)
    await persist_settlement(conn, Settlement(health={hook.id: recovered}))
    [row] = await list_webhooks(conn, device=dev, owner_id=owner)
    assert (row["consecutive_failures"], row["failing_since"].timestamp(), row["failures"]) == (
        1,
        2000.0,
        5,
    )
    # A healthy webhook's deliveries write nothing; one known to fail is reset.
    healthy = HealthChange(reset=True)
    await persist_settlement(conn, Settlement(health={hook.id: healthy}))
    assert (await list_webhooks(conn, device=dev, owner_id=owner))[0]["failures"] == 5
    await persist_settlement(conn, Settlement(health={hook.id: healthy}), failing={hook.id})
    [row] = await list_webhooks(conn, device=dev, owner_id=owner)
    assert (row["consecutive_failures"], row["failing_since"]) == (0, None)


async def test_a_long_run_of_failures_or_a_410_disables_the_webhook(conn: Conn) -> None:
    owner = await user(conn)
    dev = await device(conn, owner)
    long_run = await webhook(conn, dev, owner, "https://r.example/long")
    gone = await webhook(conn, dev, owner, "https://r.example/gone")
    policy = DisablePolicy(after=100.0, min_failures=3)
    now = 10_000.0
    start = HealthChange(failures=2, failing_since=now - 500, failed=2, last_error="http: 500")
    assert (
        await persist_settlement(
            conn, Settlement(health={long_run.id: start}), disable_policy=policy, now=now
        )
        == []
    )  # two failures only
    more = HealthChange(failures=1, failing_since=now, failed=1, last_error="timeout: 10 s")
    disabled = await persist_settlement(
        conn,
        Settlement(health={long_run.id: more}, gone={gone.id: "gone: the receiver answered 410"}),
        disable_policy=policy,
        now=now,
    )
    assert sorted(disabled) == sorted([(long_run.id, dev), (gone.id, dev)])
    rows = {r["id"]: r for r in await list_webhooks(conn, device=dev, owner_id=owner)}
    assert rows[long_run.id]["disabled_reason"].startswith("failing: no successful delivery since")
    assert "3 failed attempts in a row; last: timeout: 10 s" in rows[long_run.id]["disabled_reason"]
    assert rows[gone.id]["disabled_reason"] == "gone: the receiver answered 410"
    assert rows[gone.id]["disabled_at"] is not None


async def test_rows_of_a_webhook_deleted_meanwhile_are_skipped(conn: Conn) -> None:
    owner = await user(conn)
    dev = await device(conn, owner)
    hook = await webhook(conn, dev, owner)
    await delete_webhook(conn, webhook_id=hook.id, device=dev, owner_id=owner)
    await persist_settlement(
        conn,
        Settlement(retries=[retry_row(hook, "x")], health={hook.id: HealthChange(failed=1)}),
    )
    log = AttemptLog()
    log.add([record(hook.id, 1)])
    assert await log.flush(conn) == 1
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM webhook_retries) AS r,"
        " (SELECT count(*) FROM webhook_deliveries) AS d"
    )
    assert await cur.fetchone() == {"r": 0, "d": 0}


# --- The attempt log -----------------------------------------------------------------------------


async def test_the_attempt_log_is_written_in_bulk_and_pruned(conn: Conn) -> None:
    owner = await user(conn)
    dev = await device(conn, owner)
    a = await webhook(conn, dev, owner, "https://r.example/a")
    b = await webhook(conn, dev, owner, "https://r.example/b")
    log = AttemptLog(max_backlog=10)
    log.add([record(a.id, n) for n in range(12)] + [record(b.id, n) for n in range(3)])
    log.add([record(b.id, 99, at=time.time() - 10 * 86_400)])  # older than the retention
    assert log.full
    assert await log.flush(conn) == 16
    assert log.backlog == 0
    newest = await list_deliveries(conn, webhook_id=a.id, limit=5)
    assert [r["message_id"] for r in newest] == ["m11", "m10", "m9", "m8", "m7"]
    page = await list_deliveries(conn, webhook_id=a.id, limit=5, before=newest[-1]["id"])
    assert page[0]["message_id"] == "m6"
    assert newest[0]["latency_ms"] == pytest.approx(1.5)
    written = log.take_written()
    assert written == {a.id, b.id}
    pruned = await prune_deliveries(conn, webhook_ids=sorted(written), keep=4, days=7)
    assert pruned == 8 + 0 + 1
    assert len(await list_deliveries(conn, webhook_id=a.id)) == 4
    assert [r["message_id"] for r in await list_deliveries(conn, webhook_id=b.id)] == [
        "m2",
        "m1",
        "m0",
    ]


async def test_a_redelivery_is_queued_due_now(conn: Conn) -> None:
    owner = await user(conn)
    hook = await webhook(conn, await device(conn, owner), owner)
    log = AttemptLog()
    log.add([record(hook.id, 1)])
    await log.flush(conn)
    [row] = await list_deliveries(conn, webhook_id=hook.id)
    queued = await schedule_redelivery(conn, webhook_id=hook.id, delivery_id=row["id"])
    assert queued is not None
    assert queued["message_id"] == "m1"
    assert await schedule_redelivery(conn, webhook_id=hook.id + 1, delivery_id=row["id"]) is None
    [ready], _ = await claim_due_retries(conn, limit=10, lease=60)
    assert (ready.message_id, ready.attempts, ready.body) == ("m1", 0, b"{}")
    # Asked again while queued after failed attempts: the same row, due now, on a fresh
    # schedule (else the next failure could be its last).
    await conn.execute(
        "UPDATE webhook_retries SET attempts = 9, last_status = 500, last_error = 'x',"
        " due_at = now() + interval '1 hour' WHERE webhook_id = %s",
        (hook.id,),
    )
    assert await schedule_redelivery(conn, webhook_id=hook.id, delivery_id=row["id"])
    assert await retry_state(conn, hook.id) == [{"message_id": "m1", "attempts": 0, "later": False}]
    cur = await conn.execute(
        "SELECT last_status, last_error FROM webhook_retries WHERE webhook_id = %s", (hook.id,)
    )
    assert await cur.fetchall() == [{"last_status": None, "last_error": None}]


# --- One batch through the real sender, receiver and Kafka ---------------------------------------


@dataclass
class Receiver:
    answers: dict[str, list[int]] = field(default_factory=dict)
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append((request.path, dict(request.headers), body))
        queue = self.answers.get(request.path, [])
        return web.Response(status=queue.pop(0) if queue else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()
    async with http_receiver(state.handle) as port:
        yield state, f"http://127.0.0.1:{port}"


async def read_topic(bootstrap: str, topic: str, want: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + 15
        while len(found) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return found


async def test_a_batch_through_the_real_sender_with_retries_and_dead_letters(
    conn: Conn,
    migrated_url: str,
    kafka_server: str,
    topic_prefix: str,
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    owner = await user(conn)
    dev = await device(conn, owner)
    ok = await webhook(conn, dev, owner, f"{base}/ok")
    flaky = await webhook(conn, dev, owner, f"{base}/flaky")
    refusing = await webhook(conn, dev, owner, f"{base}/refusing")
    state.answers = {"/flaky": [503], "/refusing": [404]}
    pool: AsyncConnectionPool[Conn] = await open_pool(migrated_url, size=2)
    sender = HttpWebhookSender(
        rules=WebhookRules(allow_http=True, allowed_cidrs=parse_cidrs(["127.0.0.0/8"]))
    )
    dead_topic = f"{topic_prefix}{TOPIC_DEAD_LETTER}"
    await ensure_topics(kafka_server, [dead_topic], 1)
    publisher = KafkaPublisher(kafka_server)
    policy = RetryPolicy(schedule=(0.05,), jitter=0.0)
    try:
        store = PgDeliveryStore(pool)

        async def publish(messages: Sequence[tuple[str, bytes]]) -> None:
            await publisher.publish(dead_topic, messages)

        points = [
            {"device": dev, "time": 1_700_000_000 + i, "metric": "t", "value": i, "unit": None}
            for i in range(3)
        ]
        batch = await prepare_fresh([dumps({"device": dev, "points": points})], store)
        await send_batch(batch, sender, policy=policy, failing=store.directory.failing)
        await finish_batch(batch, store, publish)
        # /ok: all three, in order, signed; /flaky: a 503 then the rest queued behind it;
        # /refusing: a 404, dead at once, the rest queued.
        ok_bodies = [orjson.loads(body) for path, _, body in state.got if path == "/ok"]
        assert ok_bodies == points
        for path, headers, body in state.got:
            if path == "/ok":
                Webhook(ok.secret).verify(body, {k.lower(): v for k, v in headers.items()})
        queued = {r["message_id"] for r in await retry_state(conn, flaky.id)}
        assert len(queued) == 3
        assert store.directory.failing == {flaky.id, refusing.id}

        await asyncio.sleep(0.1)
        retries = await prepare_retries(store, limit=100, lease=60)
        await send_batch(retries, sender, policy=policy)
        await finish_batch(retries, store, publish)
        assert await retry_state(conn, flaky.id) == []
        assert await retry_state(conn, refusing.id) == []
        assert len([p for p, _, _ in state.got if p == "/flaky"]) == 4  # 1 failed + 3
        assert store.directory.failing == set()  # both answered 200 this time
        rows = {r["id"]: r for r in await list_webhooks(conn, device=dev, owner_id=owner)}
        assert rows[flaky.id]["consecutive_failures"] == 0
        assert rows[flaky.id]["failures"] == 1

        assert await store.flush_log() == 3 + 4 + 3
        attempts = await list_deliveries(conn, webhook_id=flaky.id)
        assert sorted((r["attempt"], r["outcome"], r["status"]) for r in attempts) == [
            (1, "delivered", 200),
            (1, "delivered", 200),
            (1, "retry", 503),
            (2, "delivered", 200),
        ]
        letters = [
            v
            for v in await read_topic(kafka_server, dead_topic, 1)
            if v.get("webhook") == refusing.id
        ]
        assert [v["error"] for v in letters] == ["webhook_failed: http: 404 Not Found"]
        assert letters[0]["point"] == points[0]
    finally:
        await sender.aclose()
        await publisher.stop()
        await pool.close()


def test_delivery_is_frozen() -> None:
    # Deliveries are shared by concurrent chains: they must not change under them.
    d = Delivery(Hook(1, "A", "u", "s", 1), "m", b"{}")
    with pytest.raises(AttributeError):
        d.attempts = 2  # type: ignore[misc]
