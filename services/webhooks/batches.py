"""The steps the webhook worker loops over, batch by batch. For a batch of ``stored``
messages::

    batch = await prepare_fresh(values, store)         # read, one lookup, plan
    await send_batch(batch, sender, lanes=lanes, failing=store.failing)
    await finish_batch(batch, store, publish)          # dead letters, then the database

Retries claimed from the queue (:func:`prepare_retries`) are sent concurrently, in no
particular order. The worker's agent and retry poller (``stream/deliveries.py``) only loop over
these steps; planning, sending and settling are in :mod:`services.webhooks.planning`,
:mod:`services.webhooks.sending` and :mod:`services.webhooks.settlement`, and the database is
behind the :class:`services.webhooks.ports.DeliveryStore` port.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from services.accounts import usage
from services.platform import Message, metrics
from services.webhooks.lanes import Lanes
from services.webhooks.model import Delivery, Hook, Plan, Settlement
from services.webhooks.planning import plan_deliveries, read_stored
from services.webhooks.policy import DEFAULT_RETRY_POLICY, RetryPolicy
from services.webhooks.ports import DeliveryStore, PublishDeadLetters, WebhookSender
from services.webhooks.sending import send_plan
from services.webhooks.settlement import settle


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


async def prepare_fresh(
    values: Sequence[bytes], store: DeliveryStore, *, keys: Sequence[bytes | None] | None = None
) -> Batch:
    """Read a batch of ``readings`` messages and plan its deliveries (one lookup).

    ``keys``: the messages' Kafka keys (``readings`` is keyed by device). With them the
    webhooks are looked up first, and only the messages of devices that have webhooks, or of
    no key, are read: most devices have none, and reading every message's points was most of
    the webhook agent's cost (issue #16). A message is planned by the device in its value, as
    without keys; one whose key names a device without webhooks is not read.
    """
    hooks: dict[str, Sequence[Hook]] = {}
    if keys is not None:
        by_key = [None if key is None else key.decode("utf-8", "replace") for key in keys]
        devices = {device for device in by_key if device is not None}
        if devices:
            hooks.update(await store.active_hooks(devices))
        values = [
            value
            for device, value in zip(by_key, values, strict=True)
            if device is None or hooks.get(device)
        ]
    messages, unreadable = read_stored(values)
    batch = Batch(unreadable=unreadable)
    if messages:
        missing = {m.device for m in messages} - hooks.keys()
        if missing:
            hooks.update(await store.active_hooks(missing))
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
    """Publish the dead letters, then write the settlement; count the deliveries (usage) and
    the attempts (``hivepipe_webhook_attempts_total``).

    Raises when Kafka or the database fails: call it again with the same batch (what was
    done is not done twice). Returns the webhooks disabled.
    """
    settlement = batch.settlement or Settlement()
    if not batch.published:
        dead = [*batch.unreadable, *settlement.dead_letters]
        if dead:
            await publish_dead_letters(dead)
            metrics.DEAD_LETTERS.labels("webhook").inc(len(settlement.dead_letters))
            metrics.DEAD_LETTERS.labels("unreadable_message").inc(len(batch.unreadable))
        batch.published = True
    disabled = await store.persist(settlement) if not settlement.empty else []
    for record in settlement.records:
        metrics.WEBHOOK_ATTEMPTS.labels(record.result).inc()
    for owner_id, n in settlement.delivered.items():
        usage.count(owner_id, "deliveries", n)
    settlement.delivered.clear()  # counted once, even if called again
    return disabled
