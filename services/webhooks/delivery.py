"""Delivering stored data points to webhooks: plan a batch, send it, settle the results.

Plain functions over batches, and two small schedulers (:class:`Lanes`, :class:`InFlight`);
the worker's agent and retry poller (``stream/deliveries.py``) only loop over them, and
:mod:`services.webhooks.store` writes what they decide (behind the :class:`DeliveryStore`
port). For a batch of ``stored`` messages::

    batch = await prepare_fresh(values, store)         # read, one lookup, plan
    await send_batch(batch, sender, lanes=lanes, failing=store.failing)
    await finish_batch(batch, store, publish)          # dead letters, then the database

A *chain* is the points of one device for one webhook, in stored order. Chains run
concurrently, each one request after the other, and :class:`Lanes` runs the chains of one
(webhook, device) one after the other across overlapping batches: a receiver sees a device's
points in order. A chain stops at its first failed attempt: the points after it go to the retry
queue (due at once), like every point of a webhook already failing, so that a receiver that is
down or slow holds up nothing but its own deliveries. Retries claimed from the queue
(:func:`prepare_retries`) are sent concurrently, in no particular order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import defaultdict
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import orjson

from services.accounts import usage
from services.platform.events import dumps
from services.platform.kafka import Message
from services.webhooks.policy import DEFAULT_RETRY_POLICY, RetryPolicy, next_step
from services.webhooks.sender import DeliveryResult, WebhookSender
from services.webhooks.signing import message_id, signed_headers

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: What followed an attempt, as the deliveries listing shows it.
Result = Literal["delivered", "retrying", "dead", "disabled"]


@dataclass(frozen=True, slots=True)
class Hook:
    """An active webhook, as the delivery path needs it."""

    id: int
    device: str
    url: str
    secret: str
    owner_id: int


@dataclass(frozen=True, slots=True)
class Stored:
    """One ``stored`` message: the points of one uplink, once in the database."""

    device: str
    points: tuple[dict[str, Any], ...]
    stored: float | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One data point for one webhook. ``attempts`` counts the attempts already made (all
    failed); ``queued`` is set when it comes from the retry queue (its row goes once it is
    done with)."""

    hook: Hook
    message_id: str
    body: bytes
    attempts: int = 0
    queued: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """A delivery attempt and its result; ``at`` is the Unix time it started."""

    delivery: Delivery
    result: DeliveryResult
    at: float


@dataclass
class Plan:
    """``chains``: per (webhook, device), the deliveries in order; ``spilled``: deliveries that
    go straight to the retry queue, due at once (their webhook is failing)."""

    chains: list[list[Delivery]] = field(default_factory=list)
    spilled: list[Delivery] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(chain) for chain in self.chains) + len(self.spilled)


def read_stored(values: Iterable[bytes]) -> tuple[list[Stored], list[Message]]:
    """Parse raw ``stored`` values; an unreadable one becomes a dead-letter message."""
    messages: list[Stored] = []
    unreadable: list[Message] = []
    for raw in values:
        try:
            data = orjson.loads(raw)
            device = data["device"]
            points = data["points"]
            if not isinstance(device, str) or not isinstance(points, list):
                raise TypeError("device must be a string and points a list")
            if not all(isinstance(p, dict) for p in points):
                raise TypeError("every point must be an object")
            stored = data.get("stored")
            messages.append(
                Stored(device, tuple(points), float(stored) if stored is not None else None)
            )
        except Exception as exc:  # a foreign or corrupt message: kept, never stops the agent
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            unreadable.append(("", dumps({"raw": text, "error": f"webhook_unreadable: {exc!r}"})))
    return messages, unreadable


def point_delivery(hook: Hook, point: Mapping[str, Any]) -> Delivery:
    """The delivery of one data point (the contract's object, serialised as is) to ``hook``."""
    msg_id = message_id(
        webhook_id=hook.id,
        device=str(point["device"]),
        metric=str(point["metric"]),
        time=float(point["time"]),
    )
    return Delivery(hook, msg_id, dumps(point))


def plan_deliveries(
    messages: Sequence[Stored],
    hooks: Mapping[str, Sequence[Hook]],
    *,
    failing: Container[int] = frozenset(),
) -> Plan:
    """Every point of ``messages`` for every webhook of its device (``hooks``: device -> active
    webhooks), grouped in per-device chains in stored order; the deliveries of webhooks in
    ``failing`` are spilled to the retry queue. A point seen twice in the batch (a replayed
    message) is delivered once."""
    plan = Plan()
    chains: dict[tuple[int, str], list[Delivery]] = {}
    seen: set[tuple[int, str]] = set()
    for message in messages:
        device_hooks = hooks.get(message.device)
        if not device_hooks:
            continue
        for point in message.points:
            try:
                point_device = point["device"]
                if point_device != message.device:
                    raise ValueError(f"point of {point_device!r} in a message of {message.device}")
                deliveries = [point_delivery(hook, point) for hook in device_hooks]
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping a malformed stored point %r: %r", point, exc)
                continue
            for delivery in deliveries:
                key = (delivery.hook.id, delivery.message_id)
                if key in seen:
                    continue
                seen.add(key)
                if delivery.hook.id in failing:
                    plan.spilled.append(delivery)
                else:
                    chains.setdefault((delivery.hook.id, message.device), []).append(delivery)
    plan.chains = list(chains.values())
    return plan


def _headers(delivery: Delivery) -> dict[str, str]:
    # Called by the sender once the request has its slot: the timestamp is the attempt's.
    return signed_headers(
        secret=delivery.hook.secret, msg_id=delivery.message_id, body=delivery.body
    )


async def send_one(
    sender: WebhookSender, delivery: Delivery, *, clock: Callable[[], float] = time.time
) -> Attempt:
    """One attempt, signed just before it is sent."""
    at = clock()
    result = await sender.send(
        delivery.hook.url, delivery.body, functools.partial(_headers, delivery)
    )
    return Attempt(delivery, result, at)


async def send_chain(
    chain: Sequence[Delivery],
    sender: WebhookSender,
    *,
    failing: set[int] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[list[Attempt], list[Delivery]]:
    """Send a chain in order until an attempt fails; returns the attempts and the deliveries
    left for the retry queue (none after ``gone``: the webhook is being disabled).

    ``failing`` (shared by every chain in flight) is checked before each attempt and marked
    after a failure: once a webhook fails, its chains still waiting do not hammer it but go to
    the retry queue.
    """
    attempts: list[Attempt] = []
    for index, delivery in enumerate(chain):
        if failing is not None and delivery.hook.id in failing:
            return attempts, list(chain[index:])
        attempt = await send_one(sender, delivery, clock=clock)
        attempts.append(attempt)
        outcome = attempt.result.outcome
        if outcome != "delivered":
            if failing is not None:
                failing.add(delivery.hook.id)
            return attempts, [] if outcome == "gone" else list(chain[index + 1 :])
    return attempts, []


class Lanes:
    """Runs work keyed by (webhook, device): work with one key runs after the work submitted
    before it with that key (so a device's points reach a webhook in order, across batches),
    and work with different keys runs concurrently.

    With ``wait``, work waits that long at most for its predecessors; then ``on_timeout()`` is
    its result instead (the caller sends those points through the retry queue), and the work
    after it waits for the same predecessors: a receiver still busy with a device's earlier
    points never holds a batch longer than ``wait``."""

    def __init__(self) -> None:
        self._tails: dict[tuple[int, str], asyncio.Future[None]] = {}

    def submit(
        self,
        key: tuple[int, str],
        work: Callable[[], Awaitable[_T]],
        *,
        wait: float | None = None,
        on_timeout: Callable[[], _T] | None = None,
    ) -> asyncio.Task[_T]:
        """Start ``work`` once the work submitted before with ``key`` is over (however it
        ended), or give up after ``wait`` seconds (see the class)."""
        loop = asyncio.get_running_loop()
        before = self._tails.get(key)
        done: asyncio.Future[None] = loop.create_future()
        self._tails[key] = done
        gave_up = False

        async def run() -> _T:
            nonlocal gave_up
            if before is not None:
                if wait is None or on_timeout is None:
                    await asyncio.shield(before)
                else:
                    try:
                        await asyncio.wait_for(asyncio.shield(before), wait)
                    except TimeoutError:
                        gave_up = True
                        return on_timeout()
            return await work()

        def finish() -> None:
            if not done.done():
                done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]

        def release(_: asyncio.Task[_T]) -> None:
            # A callback, not a ``finally``: it runs even for a task cancelled before it began.
            if gave_up and before is not None and not before.done():
                before.add_done_callback(lambda _: finish())  # the next waits for the same
            else:
                finish()

        task = loop.create_task(run())
        task.add_done_callback(release)
        return task

    def __len__(self) -> int:
        return len(self._tails)


async def send_plan(
    plan: Plan,
    sender: WebhookSender,
    *,
    lanes: Lanes | None = None,
    lane_wait: float | None = None,
    failing: set[int] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[list[Attempt], list[Delivery]]:
    """Send every chain of ``plan`` (concurrently; the sender bounds the requests in flight;
    through ``lanes`` when batches overlap); returns the attempts, and the deliveries for the
    retry queue (the plan's spilled ones, the rests of the chains that failed, and the chains
    that waited ``lane_wait`` seconds in vain for the device's earlier points to be sent)."""
    spilled = list(plan.spilled)
    attempts: list[Attempt] = []

    def chain_work(
        chain: list[Delivery],
    ) -> Callable[[], Awaitable[tuple[list[Attempt], list[Delivery]]]]:
        return functools.partial(send_chain, chain, sender, failing=failing, clock=clock)

    if lanes is None:
        if len(plan.chains) == 1:
            done, rest = await send_chain(plan.chains[0], sender, failing=failing, clock=clock)
            return done, spilled + rest
        results = await asyncio.gather(*(chain_work(c)() for c in plan.chains))
    else:
        tasks = [
            lanes.submit(
                (c[0].hook.id, c[0].hook.device),
                chain_work(c),
                wait=lane_wait,
                on_timeout=functools.partial(_not_sent, c),
            )
            for c in plan.chains
        ]
        results = await asyncio.gather(*tasks)
    for done, rest in results:
        attempts.extend(done)
        spilled.extend(rest)
    return attempts, spilled


def _not_sent(chain: list[Delivery]) -> tuple[list[Attempt], list[Delivery]]:
    return [], list(chain)


# --- Settling: what the attempts mean for the database and the dead-letter topic -------------


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """A row of ``webhook_deliveries``."""

    webhook_id: int
    at: float
    attempt: int
    outcome: str
    result: Result
    status: int | None
    latency_ms: float
    error: str | None
    message_id: str
    body: str


@dataclass(frozen=True, slots=True)
class RetryRow:
    """A row of ``webhook_retries`` to insert or update: due ``delay`` seconds from now."""

    webhook_id: int
    device: str
    message_id: str
    body: str
    attempts: int
    delay: float
    last_status: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class HealthChange:
    """What a batch's attempts did to one webhook's run of failures.

    ``reset``: one of them was delivered, and ``failures`` counts those failed after the last
    delivery (else all of them, to add to the stored run); ``failing_since`` is the start time
    of the first of those. ``failed`` counts every failed attempt of the batch; ``queued`` is
    set when one came from the retry queue (the webhook has failed before: its stored run
    must be updated, whoever recorded it).
    """

    reset: bool = False
    failures: int = 0
    failing_since: float | None = None
    failed: int = 0
    last_failure: float | None = None
    last_error: str | None = None
    queued: bool = False

    @property
    def must_write(self) -> bool:
        """Whether the stored run may change (a failure, or a success after a failure)."""
        return bool(self.failed or self.queued)


def health_change(attempts: Iterable[Attempt]) -> HealthChange:
    """Fold one webhook's attempts (in any order: they are sorted by start time)."""
    change = HealthChange()
    for attempt in sorted(attempts, key=lambda a: a.at):
        result = attempt.result
        queued = change.queued or attempt.delivery.queued
        if result.outcome == "delivered":
            change = HealthChange(
                reset=True,
                failed=change.failed,
                last_failure=change.last_failure,
                last_error=change.last_error,
                queued=queued,
            )
            continue
        change = HealthChange(
            reset=change.reset,
            failures=change.failures + 1,
            failing_since=attempt.at if change.failing_since is None else change.failing_since,
            failed=change.failed + 1,
            last_failure=attempt.at,
            last_error=describe(result),
            queued=queued,
        )
    return change


def describe(result: DeliveryResult) -> str:
    """A short explanation of a failed attempt."""
    if result.error:
        return result.error[:500]
    return f"http: {result.status}" if result.status is not None else "no answer"


@dataclass
class Settlement:
    """What a batch of attempts changes, written by ``store.persist_settlement`` in one
    transaction after the dead letters are published."""

    records: list[AttemptRecord] = field(default_factory=list)
    retries: list[RetryRow] = field(default_factory=list)
    #: (webhook id, message id) of the queued points done with: delivered, dead-lettered or
    #: dropped (a fresh point done with has no row to remove).
    finished: list[tuple[int, str]] = field(default_factory=list)
    dead_letters: list[Message] = field(default_factory=list)
    health: dict[int, HealthChange] = field(default_factory=dict)
    #: Webhooks to disable at once (410 Gone), with the reason.
    gone: dict[int, str] = field(default_factory=dict)
    #: Delivered points per owner (usage counters).
    delivered: dict[int, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.records or self.retries or self.finished or self.health or self.gone)


def dead_letter(
    delivery: Delivery,
    *,
    reason: str,
    error: str,
    attempts: int,
    status: int | None,
    now: float,
) -> Message:
    """The ``dead-letter`` message of a point given up on (key: the device)."""
    value = {
        "error": f"webhook_{reason}: {error}",
        "kind": "webhook",
        "webhook": delivery.hook.id,
        "device": delivery.hook.device,
        "message_id": delivery.message_id,
        "point": orjson.loads(delivery.body),
        "attempts": attempts,
        "status": status,
        "time": now,
    }
    return delivery.hook.device, dumps(value)


def settle(
    attempts: Iterable[Attempt],
    *,
    spilled: Iterable[Delivery] = (),
    orphaned: Iterable[tuple[Delivery, str]] = (),
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    now: float | None = None,
    rand: Callable[[], float] = random.random,
) -> Settlement:
    """Decide, for each attempt, what follows (see ``policy.next_step``): done, another attempt
    after a delay, the dead-letter topic, or the webhook disabled (410).

    ``spilled`` deliveries are queued, due at once, without an attempt; ``orphaned`` ones
    (claimed retries of a webhook disabled meanwhile, with the reason) are dead-lettered.
    """
    now = time.time() if now is None else now
    out = Settlement()
    retries: dict[tuple[int, str], RetryRow] = {}
    by_hook: defaultdict[int, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        delivery, result = attempt.delivery, attempt.result
        hook = delivery.hook
        number = delivery.attempts + 1
        by_hook[hook.id].append(attempt)
        step = next_step(
            result.outcome,
            failed_attempts=number,
            retry_after=result.retry_after,
            policy=policy,
            rand=rand,
        )
        key = (hook.id, delivery.message_id)
        error = None if result.outcome == "delivered" else describe(result)
        outcome: Result
        if step.action != "retry":
            retries.pop(key, None)
            if delivery.queued:
                out.finished.append(key)
        if step.action == "done":
            outcome = "delivered"
            out.delivered[hook.owner_id] = out.delivered.get(hook.owner_id, 0) + 1
        elif step.action == "retry":
            outcome = "retrying"
            assert step.delay is not None
            retries[key] = RetryRow(
                hook.id,
                hook.device,
                delivery.message_id,
                delivery.body.decode(),
                number,
                step.delay,
                result.status,
                error,
            )
        elif step.action == "dead_letter":
            outcome = "dead"
            reason = "retries_exhausted" if result.outcome == "retry" else "failed"
            out.dead_letters.append(
                dead_letter(
                    delivery,
                    reason=reason,
                    error=error or "",
                    attempts=number,
                    status=result.status,
                    now=now,
                )
            )
        else:  # disable: 410 Gone, the point is dropped with the webhook
            outcome = "disabled"
            out.gone[hook.id] = f"gone: the receiver answered {result.status} Gone"
        out.records.append(
            AttemptRecord(
                hook.id,
                attempt.at,
                number,
                result.outcome,
                outcome,
                result.status,
                round(result.latency_ms, 3),
                error,
                delivery.message_id,
                delivery.body.decode(),
            )
        )
    for delivery in spilled:
        key = (delivery.hook.id, delivery.message_id)
        if key not in retries and delivery.hook.id not in out.gone:
            retries[key] = RetryRow(
                delivery.hook.id,
                delivery.hook.device,
                delivery.message_id,
                delivery.body.decode(),
                delivery.attempts,
                0.0,
            )
    for delivery, reason in orphaned:
        out.finished.append((delivery.hook.id, delivery.message_id))
        out.dead_letters.append(
            dead_letter(
                delivery,
                reason="disabled",
                error=reason,
                attempts=delivery.attempts,
                status=None,
                now=now,
            )
        )
    out.retries = list(retries.values())
    out.health = {hook_id: health_change(items) for hook_id, items in by_hook.items()}
    return out


def disable_reason(
    *, consecutive_failures: int, failing_since: float, last_error: str | None
) -> str:
    """Why a webhook was disabled after a long run of failures (shown to its owner)."""
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(failing_since))
    reason = f"failing: no successful delivery since {since}"
    reason += f" ({consecutive_failures} failed attempts in a row"
    return reason + (f"; last: {last_error})" if last_error else ")")


# --- The steps the worker loops over -------------------------------------------------------------


class DeliveryStore(Protocol):
    """What delivering needs of the database (``store.PgDeliveryStore``; a fake in tests)."""

    @property
    def failing(self) -> Container[int]:
        """Webhooks whose last known attempt failed."""
        ...

    async def active_hooks(self, devices: set[str]) -> Mapping[str, Sequence[Hook]]:
        """The active webhooks of each device (cached: at most one query per call)."""
        ...

    async def claim_retries(
        self, *, limit: int, lease: float, exclude: Collection[int] = ()
    ) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
        """Claim due retries, none of the webhooks in ``exclude``: those to attempt, and those
        of disabled webhooks (with why)."""
        ...

    async def persist(self, settlement: Settlement) -> list[tuple[int, str]]:
        """Write a settled batch; returns the webhooks it disabled as (id, device)."""
        ...


PublishDeadLetters = Callable[[Sequence[Message]], Awaitable[None]]


@dataclass
class Batch:
    """A batch on its way: planned, then sent and settled; ``published`` once its dead letters
    are on Kafka (so that writing it again after a database error does not publish twice)."""

    plan: Plan = field(default_factory=Plan)
    unreadable: list[Message] = field(default_factory=list)
    orphaned: list[tuple[Delivery, str]] = field(default_factory=list)
    settlement: Settlement | None = None
    published: bool = False

    @property
    def empty(self) -> bool:
        return not (self.plan.size or self.unreadable or self.orphaned)


class InFlight:
    """Runs up to ``limit`` pieces of work at a time; :meth:`submit` waits for room. A piece
    that raises is logged (it must handle what it can: here, retry until done)."""

    def __init__(self, limit: int = 8) -> None:
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, work: Callable[[], Awaitable[None]]) -> None:
        while len(self._tasks) >= self._limit:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

        async def run() -> None:
            await work()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook batch failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the work in flight."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def cancel(self) -> None:
        """Cancel the work in flight."""
        for task in self._tasks:
            task.cancel()

    def __len__(self) -> int:
        return len(self._tasks)


async def prepare_fresh(values: Sequence[bytes], store: DeliveryStore) -> Batch:
    """Read a batch of ``stored`` messages and plan its deliveries (one lookup)."""
    messages, unreadable = read_stored(values)
    batch = Batch(unreadable=unreadable)
    if messages:
        hooks = await store.active_hooks({m.device for m in messages})
        batch.plan = plan_deliveries(messages, hooks, failing=store.failing)
    return batch


async def prepare_retries(
    store: DeliveryStore, *, limit: int, lease: float, exclude: Collection[int] = ()
) -> Batch:
    """Claim due retries as a batch (none of the webhooks in ``exclude``): each its own chain
    (sent concurrently, in no order)."""
    ready, orphaned = await store.claim_retries(limit=limit, lease=lease, exclude=exclude)
    return Batch(plan=Plan(chains=[[d] for d in ready]), orphaned=orphaned)


async def send_batch(
    batch: Batch,
    sender: WebhookSender,
    *,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    lanes: Lanes | None = None,
    lane_wait: float | None = None,
    failing: set[int] | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> Batch:
    """Send the batch's deliveries and settle the results (never raises for a receiver).

    ``lanes`` keeps each device's order when batches are sent while earlier ones are still in
    flight, waiting ``lane_wait`` seconds at most (then the points go to the retry queue);
    ``failing`` is the set of failing webhooks, shared with the store's directory.
    """
    attempts, spilled = await send_plan(
        batch.plan, sender, lanes=lanes, lane_wait=lane_wait, failing=failing, clock=clock
    )
    batch.settlement = settle(
        attempts, spilled=spilled, orphaned=batch.orphaned, policy=policy, now=clock(), rand=rand
    )
    return batch


async def finish_batch(
    batch: Batch, store: DeliveryStore, publish_dead_letters: PublishDeadLetters
) -> list[tuple[int, str]]:
    """Publish the dead letters, then write the settlement; count the deliveries (usage).

    Raises when Kafka or the database fails: call it again with the same batch (what was
    done is not done twice). Returns the webhooks disabled.
    """
    settlement = batch.settlement or Settlement()
    if not batch.published:
        dead = [*batch.unreadable, *settlement.dead_letters]
        if dead:
            await publish_dead_letters(dead)
        batch.published = True
    disabled = await store.persist(settlement) if not settlement.empty else []
    for owner_id, n in settlement.delivered.items():
        usage.count(owner_id, "deliveries", n)
    settlement.delivered.clear()  # counted once, even if called again
    return disabled
