"""The decode-and-store step of the stream, as a plain function over a batch of envelopes.

``process_uplinks`` decodes every envelope with its device's codec, stores points, events and
state in one transaction, and only then publishes ``readings`` (one message per uplink with all
its points), ``device-events`` and ``dead-letter``; the ``readings`` messages of the devices
that have webhooks also go to the internal ``webhook-readings``, which the webhook agent reads.
Everything it writes is keyed so that a replay of the same batch (at-least-once delivery)
stores nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.accounts import usage
from services.codecs import CodecCache, Decoded, DecodeError, decode_custom, decode_uplink
from services.devices import DeviceDirectory, info_problem
from services.devices import store as devices_store
from services.orbit import note_uplinks, orbit_uplink
from services.platform import (
    TOPIC_DEAD_LETTER,
    TOPIC_DEVICE_EVENTS,
    TOPIC_READINGS,
    TOPIC_WEBHOOK_READINGS,
    DataPoint,
    DeviceEvent,
    Message,
    Publisher,
    UplinkEnvelope,
    dumps,
    metrics,
)
from services.readings.device_events import store_events
from services.readings.points import store_points
from services.readings.state import store_state
from services.webhooks import WebhookDirectory

Row = dict[str, Any]


@dataclass
class BatchResult:
    """What one batch did, for metrics and tests."""

    uplinks: int = 0
    points: int = 0
    stored: int = 0
    events: int = 0
    dead_letters: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Plan:
    points: list[DataPoint] = field(default_factory=list)
    events: list[tuple[DeviceEvent, str | None]] = field(default_factory=list)
    states: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    dead: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: One ``readings`` message per uplink with points: (device, the message without ``stored``).
    readings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Orbit uplinks without an ack, counted towards in-flight updates' time-out.
    orbit_uplinks: list[tuple[str, int, float]] = field(default_factory=list)


def _dead_letter(env: UplinkEnvelope, error: str) -> tuple[str, dict[str, Any]]:
    return env.device, {**env.to_dict(), "error": error}


def readings_message(env: UplinkEnvelope, points: Sequence[DataPoint]) -> dict[str, Any]:
    """The ``readings`` message of one uplink: ``{"device", "time", "uplink", "points"}``
    (``docs/schemas/readings.schema.json``); ``stored`` is added when it is published."""
    t: float | int = int(env.received) if float(env.received).is_integer() else env.received
    return {
        "device": env.device,
        "time": t,
        "uplink": env.id,
        "points": [p.to_dict() for p in points],
    }


def plan_batch(
    envelopes: Sequence[UplinkEnvelope],
    devices: dict[str, Any],
    result: BatchResult,
    decode: Callable[[str, UplinkEnvelope], Decoded] = decode_uplink,
) -> _Plan:
    """Decode a batch (pure): what to store and publish. ``decode`` is the batch's decoding
    (:meth:`services.codecs.CustomDecodes.decode` with the accounts' own models)."""
    plan = _Plan()
    for env in envelopes:
        result.uplinks += 1
        info = devices.get(env.device)
        reason = info_problem(info)
        if reason is not None:
            plan.dead.append(_dead_letter(env, reason))
            result.reasons[reason] = result.reasons.get(reason, 0) + 1
            continue
        assert info is not None  # no device is a problem
        plan.seen[env.device] = max(plan.seen.get(env.device, 0.0), env.received)
        try:
            decoded = decode(info.model, env)
        except DecodeError as exc:
            event = DeviceEvent(
                env.device,
                env.received,
                "decode_error",
                {
                    "reason": exc.reason,
                    "uplink": env.id,
                    "source": env.source,
                    "payload_hex": env.payload_hex,
                    "payload_json": env.payload_json,
                },
            )
            plan.events.append((event, f"{env.id}:decode_error"))
            if counted := orbit_uplink(info.model, env, ())[1]:
                plan.orbit_uplinks.append(counted)
            plan.dead.append(_dead_letter(env, f"decode_error: {exc.reason}"))
            result.reasons["decode_error"] = result.reasons.get("decode_error", 0) + 1
            continue
        plan.points.extend(decoded.points)
        if decoded.points:
            plan.readings.append((env.device, readings_message(env, decoded.points)))
        events, counted = orbit_uplink(info.model, env, decoded.events)
        if counted:
            plan.orbit_uplinks.append(counted)
        for index, event in enumerate(events):
            plan.events.append((event, f"{env.id}:{index}"))
            if event.type == "status":
                plan.status[env.device] = event.data
        if decoded.state is not None:
            plan.states.append((env.device, env.received, decoded.state))
    return plan


#: More work for the batch's transaction (the stream forgets the batch's intake-journal rows in
#: it: stored and forgotten together, or neither).
AlsoInTransaction = Callable[[AsyncConnection[Row]], Awaitable[None]]


async def _store(
    conn: AsyncConnection[Row], plan: _Plan, also: AlsoInTransaction | None = None
) -> int:
    stored = 0
    async with conn.transaction():
        if also is not None:
            await also(conn)
        if plan.points:
            stored = await store_points(conn, plan.points)
        await store_events(conn, plan.events)
        for device, at, state in plan.states:
            await store_state(conn, device, at, state)
        await devices_store.note_last_seen(conn, plan.seen)
        await note_uplinks(conn, plan.orbit_uplinks)
        for device, status in plan.status.items():
            await devices_store.set_status(
                conn, device, battery_mv=status.get("battery_mv"), firmware=status.get("firmware")
            )
    return stored


async def process_uplinks(
    envelopes: Sequence[UplinkEnvelope],
    *,
    pool: AsyncConnectionPool[AsyncConnection[Row]],
    publisher: Publisher,
    directory: DeviceDirectory,
    topic: Any,
    also: AlsoInTransaction | None = None,
    codecs: CodecCache | None = None,
    webhooks: WebhookDirectory | None = None,
) -> BatchResult:
    """Decode, store (one transaction), then publish; raises if storing or publishing fails.

    ``topic`` maps a topic name of :mod:`services.platform.events` to its full name; ``also``
    runs in the storing transaction, before it; ``codecs`` holds the process's compiled
    JavaScript codecs (the accounts' own models). On an exception
    nothing is acknowledged and the caller retries the whole batch (idempotent).

    ``webhooks``: the devices' webhooks are looked up once the points are committed, and only
    the ``readings`` messages of devices that have some go to ``webhook-readings`` (a change
    committed before the points is seen: the directory's generation, docs/webhooks.md).
    Without it every ``readings`` message goes there too (the webhook agent filters them).
    """
    result = BatchResult()
    async with pool.connection() as conn:
        devices = await directory.lookup(conn, {env.device for env in envelopes})
        custom = await decode_custom(conn, envelopes, devices, codecs or _default_codecs())
        plan = plan_batch(envelopes, devices, result, custom.decode)
        result.stored = await _store(conn, plan, also)
        await custom.note_health(conn)
        hooked = await _hooked(conn, plan, webhooks)
    result.points = len(plan.points)
    result.events = len(plan.events)
    result.dead_letters = len(plan.dead)
    now = time.time()
    readings: list[Message] = [
        (device, dumps({**message, "stored": now})) for device, message in plan.readings
    ]
    fed = readings if hooked is None else [m for m in readings if m[0] in hooked]
    events: list[Message] = [(e.device, dumps(e.to_dict())) for e, _ in plan.events]
    dead: list[Message] = [(device, dumps(value)) for device, value in plan.dead]
    await publisher.publish_many(
        [
            (topic(TOPIC_READINGS), readings),
            (topic(TOPIC_WEBHOOK_READINGS), fed),
            (topic(TOPIC_DEVICE_EVENTS), events),
            (topic(TOPIC_DEAD_LETTER), dead),
        ]
    )
    count_batch(envelopes, devices, plan.points, result)
    return result


async def _hooked(
    conn: AsyncConnection[Row], plan: _Plan, webhooks: WebhookDirectory | None
) -> set[str] | None:
    """The devices of ``plan``'s readings that have webhooks (None: every device, unknown)."""
    if webhooks is None:
        return None
    if not plan.readings:
        return set()
    found = await webhooks.lookup(conn, {device for device, _ in plan.readings})
    return {device for device, hooks in found.items() if hooks}


_codecs: list[CodecCache] = []


def _default_codecs() -> CodecCache:
    """The process's codec cache with the default limits, for callers that bring none."""
    if not _codecs:
        _codecs.append(CodecCache())
    return _codecs[0]


def count_batch(
    envelopes: Sequence[UplinkEnvelope],
    devices: dict[str, Any],
    points: Sequence[DataPoint],
    result: BatchResult,
) -> None:
    """Usage per owner (uplinks, points) and the worker's metrics, once a batch is done."""
    for env in envelopes:
        info = devices.get(env.device)
        if info is not None and info.active:
            usage.count(info.owner_id, "uplinks")
    per_owner: dict[int, int] = {}
    for point in points:
        info = devices.get(point.device)
        if info is not None:
            per_owner[info.owner_id] = per_owner.get(info.owner_id, 0) + 1
    for owner, n in per_owner.items():
        usage.count(owner, "points", n)
    metrics.POINTS_STORED.inc(result.stored)
    for reason, n in result.reasons.items():
        metrics.DEAD_LETTERS.labels(reason).inc(n)
