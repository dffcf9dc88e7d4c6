"""Planning a batch of webhook deliveries: ``readings`` messages read, and every point of them
turned into a delivery for every webhook of its device, grouped in chains.

A *chain* is the points of one device for one webhook, in stored order; the deliveries of a
webhook already failing are *spilled* to the retry queue (due at once) instead, so that a
receiver that is down or slow holds up nothing but its own deliveries.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

import orjson

from services.platform import Message, dumps
from services.webhooks.model import Delivery, Hook, Plan, Stored
from services.webhooks.signing import message_id

# The logger keeps the name it had before delivering was split into modules (log filters).
log = logging.getLogger(__name__)


def read_stored(values: Iterable[bytes]) -> tuple[list[Stored], list[Message]]:
    """Parse raw ``readings`` values; an unreadable one becomes a dead-letter message."""
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
