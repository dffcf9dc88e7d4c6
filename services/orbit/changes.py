"""Orbit changes whose device events also go on Kafka (``device-events``).

Each function wraps one :mod:`services.orbit.store` change and adds the resulting device events
to the outbox (:mod:`services.platform.outbox`) in the same transaction: an event is published
if and only if its change was committed, and no caller waits for Kafka. The store still writes
the ``device_events`` rows. After the commit, wake the process's outbox relay (or let it poll).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from psycopg.rows import tuple_row

from services.orbit import queue, store
from services.orbit.params import MODELS
from services.orbit.state import Outcome
from services.orbit.store import Conn
from services.platform import TOPIC_DEVICE_EVENTS, DeviceEvent, UplinkEnvelope, outbox

__all__ = [
    "Ack",
    "apply_ack",
    "delete_pending",
    "note_uplinks",
    "orbit_uplink",
    "outcome_events",
    "register",
]

#: Sigfox seqNumbers are 12 bits; the store keeps them in a PostgreSQL ``integer``.
MAX_SIGFOX_SEQ = 2**31 - 1


def outcome_events(device: str, now: float, outcomes: Iterable[Outcome]) -> list[DeviceEvent]:
    """The device events of ``outcomes``, as the store records them (``unchanged`` is none)."""
    return [
        DeviceEvent(device.upper(), now, o.kind, o.event_data())
        for o in outcomes
        if o.kind != "unchanged"
    ]


async def _announce(conn: Conn, events: Sequence[DeviceEvent]) -> None:
    await outbox.add_events(conn, TOPIC_DEVICE_EVENTS, events)


async def register(
    conn: Conn, device: str, params: Mapping[str, float], now: float
) -> tuple[Outcome, ...]:
    """:func:`store.register` and its events; raises ``InvalidParam`` or ``UnknownDevice``."""
    async with conn.transaction():
        outcomes = await store.register(conn, device, params, now)
        await _announce(conn, outcome_events(device, now, outcomes))
    return outcomes


async def delete_pending(conn: Conn, device: str, param: str, now: float) -> bool:
    """:func:`store.delete_pending` and its ``param_dropped`` events; False when none was
    pending. Raises ``InvalidParam`` (unknown name) or ``UnknownDevice``."""
    device = device.upper()
    async with conn.transaction():
        # The store returns no outcomes for a deletion: lock the row first, so that the updates
        # read here are exactly those it deletes (no row: nothing can be pending).
        await conn.execute("SELECT 1 FROM orbit_config WHERE device = %s FOR UPDATE", (device,))
        _, outcomes = queue.delete_pending(await store.load_config(conn, device), param)
        if not outcomes:
            return False
        deleted = await store.delete_pending(conn, device, param, now=now)
        await _announce(conn, outcome_events(device, now, outcomes))
    return deleted


@dataclass(frozen=True, slots=True)
class Ack:
    """A parameter ack (``param_ack`` event): downlink ``seq``'s (param id, raw value) pairs,
    carried by uplink ``uplink_seq`` (its Sigfox seqNumber) at network time ``time``."""

    device: str
    time: float
    seq: int
    params: tuple[tuple[int, int], ...]
    uplink_seq: int


async def apply_ack(conn: Conn, ack: Ack) -> tuple[Outcome, ...]:
    """Apply the ack, then count its uplink (in that order: an ack in the second uplink after a
    send acks the update rather than re-queueing it). Idempotent per (device, uplink_seq)."""
    async with conn.transaction():
        outcomes = await store.apply_ack_event(
            conn, ack.device, ack.seq, ack.params, ack.time, sigfox_seq_number=ack.uplink_seq
        )
        outcomes += await store.note_uplink(conn, ack.device, ack.uplink_seq, ack.time)
        await _announce(conn, outcome_events(ack.device, ack.time, outcomes))
    return outcomes


async def note_uplinks(conn: Conn, uplinks: Sequence[tuple[str, int, float]]) -> int:
    """Count Orbit uplinks without an ack ((device, Sigfox seqNumber, network time), in order)
    towards their in-flight updates' time-out; returns how many outcomes that produced.

    Only devices with an update in flight are touched (one query for the batch): for the others
    :func:`store.note_uplink` would change nothing, and an update sent later is newer than
    these uplinks anyway.
    """
    if not uplinks:
        return 0
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "SELECT DISTINCT device FROM orbit_pending WHERE status = 'in_flight'"
            " AND device = ANY(%s)",
            (list({device.upper() for device, _, _ in uplinks}),),
        )
        in_flight = {row[0] for row in await cur.fetchall()}
    produced = 0
    # By device (a stable sort keeps each device's order): rows are locked in one order.
    for device, sigfox_seq, at in sorted(uplinks, key=lambda u: u[0].upper()):
        if device.upper() not in in_flight:
            continue
        try:
            async with conn.transaction():
                outcomes = await store.note_uplink(conn, device, sigfox_seq, at)
                await _announce(conn, outcome_events(device, at, outcomes))
        except store.UnknownDevice:
            continue  # deleted meanwhile: nothing left to count
        produced += len(outcomes)
    return produced


def orbit_uplink(
    model: str, envelope: UplinkEnvelope, events: Sequence[DeviceEvent]
) -> tuple[list[DeviceEvent], tuple[str, int, float] | None]:
    """What the decode step does for an Orbit uplink besides storing it.

    Returns ``events`` with each ``param_ack`` carrying the uplink's Sigfox seqNumber as
    ``uplink_seq`` (the ack agent applies it idempotently by that number), and the uplink as
    (device, seqNumber, network time) for :func:`note_uplinks` when it carries no ack (the ack
    agent counts those after applying the ack), else None. Other uplinks pass unchanged.
    """
    seq = envelope.meta.get("seq")
    if (
        model not in MODELS
        or envelope.source != "sigfox"
        or not isinstance(seq, int)
        or not 0 <= seq <= MAX_SIGFOX_SEQ
    ):
        return list(events), None
    tagged = [
        replace(e, data={**e.data, "uplink_seq": seq}) if e.type == "param_ack" else e
        for e in events
    ]
    if any(e.type == "param_ack" for e in tagged):
        return tagged, None
    return tagged, (envelope.device, seq, envelope.received)
