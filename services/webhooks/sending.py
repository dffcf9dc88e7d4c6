"""Sending planned webhook deliveries: one attempt signed just before it goes, a chain sent in
order until an attempt fails, and a whole plan's chains sent concurrently.

Chains run concurrently, each one request after the other, and :class:`Lanes` runs the chains
of one (webhook, device) one after the other across overlapping batches: a receiver sees a
device's points in order. A chain stops at its first failed attempt: the points after it go to
the retry queue (due at once), like every point of a webhook already failing.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence

from services.webhooks.lanes import Lanes
from services.webhooks.model import Attempt, Delivery, Plan
from services.webhooks.ports import WebhookSender
from services.webhooks.signing import signed_headers


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
