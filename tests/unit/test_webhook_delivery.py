"""Planning, sending and settling webhook deliveries, with the fake sender and a fake store."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from services.accounts import usage
from services.platform.events import dumps
from services.webhooks import (
    DeliveryResult,
    FakeWebhookSender,
    Headers,
    RetryPolicy,
    generate_secret,
    message_id,
)
from services.webhooks.batches import (
    Batch,
    finish_batch,
    prepare_fresh,
    prepare_retries,
    send_batch,
)
from services.webhooks.in_flight import InFlight
from services.webhooks.lanes import Lanes
from services.webhooks.model import Attempt, Delivery, Hook, Plan, Settlement, Stored
from services.webhooks.planning import plan_deliveries, point_delivery, read_stored
from services.webhooks.sending import send_chain, send_plan
from services.webhooks.settlement import health_change, settle

SECRET = generate_secret()
POLICY = RetryPolicy(schedule=(5.0, 30.0), jitter=0.0)
OK = DeliveryResult("delivered", 200, 1.0)


def hook(hook_id: int, device: str, owner: int = 7) -> Hook:
    return Hook(hook_id, device, f"https://receiver.example/{hook_id}", SECRET, owner)


def point(device: str, t: int, metric: str = "temperature", value: float = 20.5) -> dict[str, Any]:
    return {"device": device, "time": t, "metric": metric, "value": value, "unit": "°C"}


def stored(device: str, *times: int) -> Stored:
    return Stored(device, tuple(point(device, t) for t in times), 1_700_000_000.0)


def fail(outcome: str = "retry", status: int | None = 503, **kw: Any) -> DeliveryResult:
    return DeliveryResult(outcome, status, 2.0, error=f"http: {status}", **kw)  # type: ignore[arg-type]


def attempt(delivery: Delivery, result: DeliveryResult, at: float = 1000.0) -> Attempt:
    return Attempt(delivery, result, at)


# --- Reading and planning -------------------------------------------------------------------------


def test_unreadable_stored_messages_become_dead_letters() -> None:
    good = dumps({"device": "1A", "points": [point("1A", 1)], "stored": 5.5})
    messages, bad = read_stored(
        [good, b"{nope", dumps({"device": 3, "points": []}), dumps({"device": "1A", "points": [1]})]
    )
    assert messages == [Stored("1A", (point("1A", 1),), 5.5)]
    assert len(bad) == 3
    values = [orjson.loads(v) for _, v in bad]
    assert values[0]["raw"] == "{nope"
    assert all(v["error"].startswith("webhook_unreadable") for v in values)


def test_every_point_goes_to_every_webhook_of_its_device_in_per_device_chains() -> None:
    a1, a2, b1 = hook(1, "A"), hook(2, "A"), hook(3, "B")
    hooks = {"A": (a1, a2), "B": (b1,), "C": ()}
    messages = [stored("A", 10, 20), stored("B", 10), stored("C", 10), stored("A", 30)]
    plan = plan_deliveries(messages, hooks)
    assert plan.spilled == []
    by_key = {(c[0].hook.id, c[0].hook.device): c for c in plan.chains}
    assert set(by_key) == {(1, "A"), (2, "A"), (3, "B")}
    for key, times in (((1, "A"), [10, 20, 30]), ((2, "A"), [10, 20, 30]), ((3, "B"), [10])):
        chain = by_key[key]
        assert [orjson.loads(d.body)["time"] for d in chain] == times
    first = by_key[(1, "A")][0]
    # The body is the contract's data point, as stored; the id is stable per webhook and point.
    assert orjson.loads(first.body) == point("A", 10)
    assert first.message_id == message_id(webhook_id=1, device="A", metric="temperature", time=10)
    assert by_key[(2, "A")][0].message_id != first.message_id
    assert plan.size == 7


def test_failing_webhooks_are_spilled_and_a_replayed_point_is_planned_once() -> None:
    a1, a2 = hook(1, "A"), hook(2, "A")
    plan = plan_deliveries(
        [stored("A", 10), stored("A", 10, 20)], {"A": (a1, a2)}, failing=frozenset({2})
    )
    assert [[orjson.loads(d.body)["time"] for d in c] for c in plan.chains] == [[10, 20]]
    assert [(d.hook.id, orjson.loads(d.body)["time"]) for d in plan.spilled] == [(2, 10), (2, 20)]


def test_malformed_points_are_skipped_not_fatal() -> None:
    bad = Stored(
        "A",
        (
            {"device": "A", "time": 1, "value": 2.0},  # no metric
            {"device": "B", "time": 1, "metric": "m", "value": 2.0},  # another device's
            {"device": "A", "time": "soon", "metric": "m", "value": 2.0},
            point("A", 5),
        ),
    )
    plan = plan_deliveries([bad], {"A": (hook(1, "A"),)})
    assert [orjson.loads(d.body) for c in plan.chains for d in c] == [point("A", 5)]


# --- Sending --------------------------------------------------------------------------------------


async def test_each_attempt_is_signed_when_sent_with_the_same_webhook_id() -> None:
    delivery = point_delivery(hook(1, "A"), point("A", 10))
    sender = FakeWebhookSender(answers=[fail()])
    await send_chain([delivery], sender)
    await asyncio.sleep(1.1)  # the next attempt's timestamp is another second
    await send_chain([delivery], sender)
    first, second = sender.sent
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.message_id
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    for request in sender.sent:
        assert request.url == "https://receiver.example/1"
        assert Webhook(SECRET).verify(request.body, request.headers) == point("A", 10)
    with pytest.raises(Exception, match="signature"):
        Webhook(generate_secret()).verify(first.body, first.headers)


async def test_a_chain_stops_at_its_first_failure_and_marks_the_webhook_failing() -> None:
    chain = [point_delivery(hook(1, "A"), point("A", t)) for t in (1, 2, 3, 4)]
    failing: set[int] = set()
    sender = FakeWebhookSender(answers=[OK, fail()])
    attempts, rest = await send_chain(chain, sender, failing=failing)
    assert [a.result.outcome for a in attempts] == ["delivered", "retry"]
    assert rest == chain[2:]
    assert failing == {1}
    # A chain of a webhook known to fail sends nothing.
    attempts, rest = await send_chain(chain, FakeWebhookSender(), failing=failing)
    assert (attempts, rest) == ([], chain)
    # After a 410, what is left is dropped with the webhook.
    attempts, rest = await send_chain(chain, FakeWebhookSender(answers=[fail("gone", 410)]))
    assert (len(attempts), rest) == (1, [])


@dataclass
class SlowSender:
    """Answers after a random delay, recording the order requests were sent in."""

    rand: random.Random = field(default_factory=lambda: random.Random(4))
    order: list[tuple[str, int]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        value = orjson.loads(body)
        self.order.append((value["device"], value["time"]))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.rand.random() * 0.004)
        self.in_flight -= 1
        return OK


async def test_lanes_keep_each_devices_order_across_overlapping_batches() -> None:
    hooks = {d: (hook(i, d),) for i, d in enumerate("ABCDEFGH")}
    plans = [
        plan_deliveries([stored(d, *range(b * 10, b * 10 + 3)) for d in hooks], hooks)
        for b in range(6)
    ]
    sender = SlowSender()
    lanes = Lanes()
    results = await asyncio.gather(*(send_plan(p, sender, lanes=lanes) for p in plans))
    assert sum(len(attempts) for attempts, _ in results) == 6 * 3 * len(hooks)
    for device in hooks:
        times = [t for d, t in sender.order if d == device]
        assert times == sorted(times), device
    assert sender.peak > len(hooks) / 2  # devices did run concurrently
    assert len(lanes) == 0


@dataclass
class HangingSender:
    """Holds every request to device ``stuck`` until ``release`` is set; answers others."""

    stuck: str
    release: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[tuple[str, int]] = field(default_factory=list)

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        value = orjson.loads(body)
        if value["device"] == self.stuck:
            await self.release.wait()
        self.sent.append((value["device"], value["time"]))
        return OK


async def test_a_busy_lane_holds_a_batch_for_lane_wait_at_most() -> None:
    hooks = {"S": (hook(1, "S"),), "F": (hook(2, "F"),)}
    sender = HangingSender(stuck="S")
    lanes = Lanes()
    first = asyncio.ensure_future(
        send_plan(plan_deliveries([stored("S", 1)], hooks), sender, lanes=lanes, lane_wait=0.05)
    )
    await asyncio.sleep(0.01)  # S's first point is at the receiver, which does not answer
    loop = asyncio.get_running_loop()
    for b in range(2, 4):  # later batches: S's points wait 0.05 s, then go to the retry queue
        started = loop.time()
        plan = plan_deliveries([stored("S", b), stored("F", b)], hooks)
        attempts, rest = await send_plan(plan, sender, lanes=lanes, lane_wait=0.05)
        assert loop.time() - started < 1.0
        assert [(a.delivery.hook.device, a.result.outcome) for a in attempts] == [
            ("F", "delivered")
        ]
        assert [(d.hook.device, orjson.loads(d.body)["time"]) for d in rest] == [("S", b)]
    assert not first.done()
    sender.release.set()
    attempts, rest = await first
    assert ([a.result.outcome for a in attempts], rest) == (["delivered"], [])
    await asyncio.sleep(0)
    assert len(lanes) == 0
    assert sender.sent == [("F", 2), ("F", 3), ("S", 1)]


async def test_in_flight_bounds_the_work_running_at_once() -> None:
    running, peak = 0, 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    pool = InFlight(3)
    for _ in range(10):
        await pool.submit(work)
    await pool.drain()
    assert (peak, len(pool)) == (3, 0)


# --- Settling ------------------------------------------------------------------------------------


def test_settling_each_outcome() -> None:
    h = hook(1, "A", owner=42)
    d = [point_delivery(h, point("A", t)) for t in range(6)]
    queued = Delivery(h, d[5].message_id, d[5].body, attempts=2, queued=True)
    result = settle(
        [
            attempt(d[0], OK),
            attempt(d[1], fail()),  # first failure: retried after 5 s
            attempt(d[2], fail(retry_after=60.0)),  # Retry-After longer than the schedule
            attempt(d[3], fail("failed", 404)),  # not retried
            attempt(queued, fail()),  # third failed attempt: the schedule has two delays
        ],
        policy=POLICY,
        now=2000.0,
    )
    assert [(r.message_id, r.attempts, r.delay) for r in result.retries] == [
        (d[1].message_id, 1, 5.0),
        (d[2].message_id, 1, 60.0),
    ]
    assert result.retries[0].last_status == 503
    assert result.retries[0].body == d[1].body.decode()
    assert [(r.attempt, r.outcome, r.result) for r in result.records] == [
        (1, "delivered", "delivered"),
        (1, "retry", "retrying"),
        (1, "retry", "retrying"),
        (1, "failed", "dead"),
        (3, "retry", "dead"),
    ]
    # Only the queued point has a row to remove; fresh ones never had one.
    assert result.finished == [(1, queued.message_id)]
    letters = {orjson.loads(v)["message_id"]: orjson.loads(v) for _, v in result.dead_letters}
    assert letters[d[3].message_id]["error"] == "webhook_failed: http: 404"
    exhausted = letters[queued.message_id]
    assert exhausted["error"] == "webhook_retries_exhausted: http: 503"
    assert (exhausted["attempts"], exhausted["point"], exhausted["webhook"]) == (
        3,
        point("A", 5),
        1,
    )
    assert all(key == "A" for key, _ in result.dead_letters)
    assert result.delivered == {42: 1}
    assert result.gone == {}


def test_a_410_disables_and_drops_what_was_left() -> None:
    gone, other = hook(1, "A"), hook(2, "A")
    left = point_delivery(gone, point("A", 2))
    result = settle(
        [attempt(point_delivery(gone, point("A", 1)), fail("gone", 410))],
        spilled=[left, point_delivery(other, point("A", 2))],
        policy=POLICY,
    )
    assert result.gone == {1: "gone: the receiver answered 410 Gone"}
    assert [(r.webhook_id, r.attempts, r.delay) for r in result.retries] == [(2, 0, 0.0)]
    assert [r.result for r in result.records] == ["disabled"]
    assert result.dead_letters == []


def test_claimed_retries_of_a_disabled_webhook_are_dead_lettered() -> None:
    queued = Delivery(hook(1, "A"), "msg_x", dumps(point("A", 1)), attempts=4, queued=True)
    result = settle([], orphaned=[(queued, "webhook disabled (gone)")], now=5.0)
    assert result.finished == [(1, "msg_x")]
    [(key, raw)] = result.dead_letters
    value = orjson.loads(raw)
    assert (key, value["error"], value["attempts"]) == (
        "A",
        "webhook_disabled: webhook disabled (gone)",
        4,
    )


def test_a_failure_then_a_delivery_in_one_batch_leaves_no_retry() -> None:
    d = point_delivery(hook(1, "A"), point("A", 1))
    result = settle([attempt(d, fail(), at=1.0), attempt(d, OK, at=2.0)], policy=POLICY)
    assert result.retries == []


def test_health_folds_a_batch_of_attempts_in_time_order() -> None:
    d = point_delivery(hook(1, "A"), point("A", 1))
    q = Delivery(d.hook, d.message_id, d.body, queued=True)
    only_failures = health_change([attempt(d, fail(), at=20.0), attempt(d, fail(), at=10.0)])
    assert (only_failures.reset, only_failures.failures, only_failures.failing_since) == (
        False,
        2,
        10.0,
    )
    assert only_failures.must_write
    recovered = health_change(
        [attempt(d, fail(), at=10.0), attempt(d, OK, at=20.0), attempt(d, fail(), at=30.0)]
    )
    assert (recovered.reset, recovered.failures, recovered.failing_since, recovered.failed) == (
        True,
        1,
        30.0,
        2,
    )
    assert recovered.last_error == "http: 503"
    healthy = health_change([attempt(d, OK)])
    assert (healthy.reset, healthy.failures, healthy.must_write) == (True, 0, False)
    # A retry delivered: the stored run of failures must be reset, whoever recorded it.
    assert health_change([attempt(q, OK)]).must_write


# --- The steps the worker loops over -------------------------------------------------------------


@dataclass
class FakeStore:
    hooks: dict[str, tuple[Hook, ...]] = field(default_factory=dict)
    failing: set[int] = field(default_factory=set)
    due: list[Delivery] = field(default_factory=list)
    persisted: list[Settlement] = field(default_factory=list)
    lookups: int = 0
    fail_next_persist: int = 0

    async def active_hooks(self, devices: set[str]) -> Mapping[str, Sequence[Hook]]:
        self.lookups += 1
        return {d: self.hooks.get(d, ()) for d in devices}

    async def claim_retries(
        self, *, limit: int, lease: float, exclude: Collection[int] = ()
    ) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
        claimable = [d for d in self.due if d.hook.id not in exclude]
        claimed = claimable[:limit]
        self.due = [d for d in self.due if d not in claimed]
        return claimed, []

    async def persist(self, settlement: Settlement) -> list[tuple[int, str]]:
        if self.fail_next_persist:
            self.fail_next_persist -= 1
            raise ConnectionError("database away")
        self.persisted.append(settlement)
        return []


async def test_a_batch_costs_one_lookup_and_is_recorded_once_despite_a_database_error() -> None:
    owner = random.randrange(10**9, 2 * 10**9)
    store = FakeStore(hooks={"A": (hook(1, "A", owner=owner),)}, fail_next_persist=1)
    values = [dumps({"device": d, "points": [point(d, 1), point(d, 2)]}) for d in "ABC"]
    batch = await prepare_fresh([*values, b"garbage"], store)
    assert store.lookups == 1
    sender = FakeWebhookSender(answers=[OK, fail("failed", 400)])
    await send_batch(batch, sender, policy=POLICY)
    published: list[tuple[str, bytes]] = []

    async def publish(messages: Sequence[tuple[str, bytes]]) -> None:
        published.extend(messages)

    with pytest.raises(ConnectionError):
        await finish_batch(batch, store, publish)
    await finish_batch(batch, store, publish)  # what the agent's retry does
    assert len(published) == 2  # the garbage and the 400, once each
    assert len(store.persisted) == 1
    counted = usage.BUFFER.pending()
    assert sum(v["deliveries"] for (user, _), v in counted.items() if user == owner) == 1


async def test_with_keys_only_the_messages_of_devices_with_webhooks_are_read() -> None:
    store = FakeStore(hooks={"A": (hook(1, "A"),)})
    values = [dumps({"device": d, "points": [point(d, 1)]}) for d in "AB"]
    # B has no webhooks: its value, garbage here, is not read (no dead letter for it). A
    # message without a key is read, and its device looked up then; one whose key and value
    # disagree is planned by its value's device.
    keyed = await prepare_fresh(
        [values[0], b"garbage", values[1], values[0]],
        store,
        keys=[b"A", b"B", None, b"C"],
    )
    assert keyed.unreadable == []
    assert [[d.hook.id for d in chain] for chain in keyed.plan.chains] == [[1]]
    assert store.lookups == 1  # the keyless message's device, B, had been looked up by key
    unkeyed = await prepare_fresh([values[0], b"garbage", values[1]], store)
    assert len(unkeyed.unreadable) == 1
    assert unkeyed.plan.size == 1
    store.hooks["C"] = (hook(2, "C"),)
    late_value = dumps({"device": "C", "points": [point("C", 1)]})
    late = await prepare_fresh([late_value], store, keys=[None])
    assert [[d.hook.id for d in chain] for chain in late.plan.chains] == [[2]]


async def test_claimed_retries_are_sent_concurrently_and_settled() -> None:
    h = hook(1, "A")
    store = FakeStore(
        due=[
            Delivery(h, f"msg_{i}", dumps(point("A", i)), attempts=1, queued=True) for i in range(5)
        ]
    )
    batch = await prepare_retries(store, limit=3, lease=60.0)
    assert [len(chain) for chain in batch.plan.chains] == [1, 1, 1]
    sender = FakeWebhookSender(answer=lambda r: OK if b'"time":0' in r.body else fail())
    await send_batch(batch, sender, policy=POLICY)
    assert batch.settlement is not None
    assert sorted(batch.settlement.finished) == [(1, "msg_0")]
    assert sorted((r.message_id, r.attempts) for r in batch.settlement.retries) == [
        ("msg_1", 2),
        ("msg_2", 2),
    ]
    assert batch.settlement.health[1].must_write
    assert len(store.due) == 2


async def test_an_empty_batch_writes_nothing() -> None:
    store = FakeStore()
    batch = await prepare_fresh([dumps({"device": "Z", "points": [point("Z", 1)]})], store)
    assert batch.empty
    batch = await send_batch(Batch(plan=Plan()), FakeWebhookSender())
    await finish_batch(batch, store, _never)
    assert store.persisted == []


async def _never(messages: Sequence[tuple[str, bytes]]) -> None:
    raise AssertionError("nothing to publish")
