"""Settling a batch of webhook attempts: what each attempt means for the retry queue, the
dead-letter topic, the webhook's health and the usage counters (a :class:`Settlement`,
written by :mod:`services.webhooks.delivery_store`); and why a failing webhook is disabled.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import orjson

from services.platform import Message, dumps
from services.webhooks.model import (
    Attempt,
    AttemptRecord,
    Delivery,
    DeliveryResult,
    HealthChange,
    Result,
    RetryRow,
    Settlement,
)
from services.webhooks.policy import DEFAULT_RETRY_POLICY, RetryPolicy, next_step


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
