"""The synchronous answer to a Sigfox downlink request (a callback with ``ack: true``).

The network waits a few seconds at most, so the answer comes from PostgreSQL alone, in one
transaction on one connection, and never waits for Kafka:

1. claim the uplink's dedup key (``sigfox:{device}:{seqNumber}``, as for any Sigfox uplink) and,
   if it is new, put its envelope in the outbox for ``uplinks`` (one statement);
2. answer with :func:`services.orbit.store.answer_downlink_request` (idempotent per
   (device, seqNumber): a retry or a duplicate gets the same frame, or again no downlink);
3. for a new downlink (not one recorded for this request before), put its ``downlink_sent``
   event in the outbox for ``device-events``.

The commit is synchronous (durable): once answered, the uplink and the downlink are on disk,
and the outbox relay publishes them. A duplicate changes and publishes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from services import outbox
from services.events import TOPIC_DEVICE_EVENTS, TOPIC_UPLINKS, DeviceEvent, UplinkEnvelope
from services.ingest.accept import envelope_message
from services.ingest.dedup import CLAIM_UPSERT
from services.orbit import store
from services.orbit._rows import SAME_UPLINK_WINDOW, ts
from services.orbit.frames import decode_downlink
from services.orbit.params import from_raw
from services.orbit.store import Conn, UnknownDevice

__all__ = ["DownlinkAnswer", "answer_downlink_request", "downlink_sent_event"]

# The claim of services.ingest.dedup.claim, fused with the outbox insert (one round trip), and
# committed synchronously: here the uplink exists nowhere else until the relay publishes it.
_CLAIM_AND_KEEP = f"""
WITH claimed AS ({CLAIM_UPSERT.format(source="VALUES (%(key)s, now())")})
INSERT INTO kafka_outbox (topic, key, value)
SELECT %(topic)s, %(device)s, %(value)s FROM claimed
RETURNING id
"""  # noqa: S608 (a fixed fragment, no input)

# As services.orbit._rows.recorded_answer: the request (device, seqNumber) answered within a day.
_ANSWERED = """
SELECT 1 FROM orbit_downlink_requests
WHERE device = %s AND sigfox_seq_number = %s AND answered_at > %s
LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class DownlinkAnswer:
    """``frame_hex``: the 16 hex digits to answer with, or None (no downlink: 204).
    ``duplicate``: the uplink had been received already (it was not kept again)."""

    frame_hex: str | None
    duplicate: bool


def downlink_sent_event(
    device: str, frame_hex: str, sigfox_seq_number: int, now: float
) -> DeviceEvent:
    """The ``downlink_sent`` event of a frame, as the store records it."""
    seq, updates = decode_downlink(bytes.fromhex(frame_hex))
    data = {
        "seq": seq,
        "frame": frame_hex,
        "params": {name: from_raw(name, raw) for name, raw in updates},
        "sigfox_seq_number": sigfox_seq_number,
    }
    return DeviceEvent(device, now, "downlink_sent", data)


async def answer_downlink_request(
    conn: Conn, envelope: UplinkEnvelope, *, dedup_key: str, window_seconds: int, now: float
) -> DownlinkAnswer:
    """Keep the request's uplink and answer it (see the module's docstring).

    ``envelope.meta["seq"]`` is the Sigfox seqNumber; ``now`` the request's network time. A
    device that is not an Orbit device gets no downlink (its uplink is kept all the same).
    Raises ``psycopg.Error`` (nothing is kept: the network's retry is a new request).
    """
    device = envelope.device.upper()
    sigfox_seq = int(envelope.meta["seq"])
    _, value = envelope_message(envelope)
    # Pipeline mode: a statement whose result is not needed yet goes with the next one that is,
    # so the answer costs 4 round trips (and as many waits on a busy event loop) instead of 16.
    async with conn.pipeline(), conn.transaction():
        claim = await conn.execute(
            _CLAIM_AND_KEEP,
            {
                "key": dedup_key,
                "window": window_seconds,
                "topic": TOPIC_UPLINKS,
                "device": device,
                "value": value,
            },
        )
        # After the claim (which waits for a concurrent duplicate to commit): was this request
        # answered already? Then the downlink exists and its event was written with it. (Its
        # result is read after the store's first read, which brings it along.)
        answered = await conn.execute(_ANSWERED, (device, sigfox_seq, ts(now) - SAME_UPLINK_WINDOW))
        try:
            frame = await store.answer_downlink_request(conn, device, sigfox_seq, now)
        except UnknownDevice:
            frame = None
        if frame is not None and await answered.fetchone() is None:
            event = downlink_sent_event(device, frame, sigfox_seq, now)
            await outbox.add_events(conn, TOPIC_DEVICE_EVENTS, [event])
        fresh = await claim.fetchone() is not None
    return DownlinkAnswer(frame_hex=frame, duplicate=not fresh)
