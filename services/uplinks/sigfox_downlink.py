"""The synchronous answer to a Sigfox downlink request (a callback with ``ack: true``).

The network waits a few seconds at most, so the answer comes from PostgreSQL alone, in one
transaction on one connection, and never waits for Kafka:

1. check that the device exists and is active (else :class:`DeviceUnavailable`: nothing is
   kept, the caller dead-letters the uplink as for any callback);
2. claim the uplink's dedup key (``sigfox:{device}:{seqNumber}``, as for any Sigfox uplink) and,
   if it is new, put its envelope in the outbox for ``uplinks`` (one statement);
3. answer with :func:`services.orbit.store.answer_request_in` (idempotent per (device,
   seqNumber): a retry or a duplicate gets the same frame, or again no downlink), which first
   applies the request's own uplink: the parameter ack it carries, and its count towards the
   time-out of updates in flight (so that an update the device did not answer by this, its
   second uplink, rides this very downlink);
4. put the events of what changed in the outbox for ``device-events``: those of the request's
   own uplink, and ``downlink_sent`` for a new downlink (not one recorded for this request
   before).

That is two round trips: ``BEGIN``, 1, 2 and the store's reads travel together in one pipeline,
then the writes with the ``COMMIT``. The transaction is opened and closed by statements, not
by ``conn.transaction()``: in pipeline mode psycopg's transaction blocks (and the savepoint of
a nested one) each wait for a server round trip, which made this eight round trips. Each round
trip is a wait on a busy event loop and a busy CPU, which is what the answer's p99 is made of
under load (``docs/orbit.md``).

The commit is synchronous (durable): once answered, the uplink and the downlink are on disk,
and the outbox relay publishes them. A duplicate changes and publishes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from services.devices import ACTIVE_BY_ID, device_problem
from services.orbit import Conn, UnknownDevice, decode_downlink, from_raw, outcome_events, store
from services.platform import (
    TOPIC_DEVICE_EVENTS,
    TOPIC_UPLINKS,
    DeviceEvent,
    UplinkEnvelope,
    outbox,
)
from services.uplinks import journal
from services.uplinks.dedup import CLAIM_UPSERT
from services.uplinks.journal import envelope_message

__all__ = ["DeviceUnavailable", "DownlinkAnswer", "answer_downlink_request", "downlink_sent_event"]

# The claim of services.uplinks.dedup.claim, fused with the outbox insert (one round trip), and
# committed synchronously: here the uplink exists nowhere else until the relay publishes it.
# With the intake journal kept (``%(journal)s``) the uplink is journaled too: the outbox's row
# goes once Kafka has it, the journal's once the worker has stored it.
_CLAIM_AND_KEEP = f"""
WITH claimed AS ({CLAIM_UPSERT.format(source="VALUES (%(key)s, now())")}),
     journaled AS ({journal.INSERT_CLAIMED.format(when="")})
INSERT INTO kafka_outbox (topic, key, value)
SELECT %(topic)s, %(device)s, %(value)s FROM claimed
RETURNING id
"""  # noqa: S608 (a fixed fragment, no input)


class DeviceUnavailable(LookupError):
    """The device is unknown (``unknown_device``) or deactivated (``inactive_device``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
    conn: Conn,
    envelope: UplinkEnvelope,
    *,
    dedup_key: str,
    window_seconds: int,
    now: float,
    keep_journal: bool = True,
) -> DownlinkAnswer:
    """Keep the request's uplink and answer it (see the module's docstring).

    ``keep_journal``: the uplink is also kept in the intake journal until stored
    (``HIVEPIPE_INTAKE_JOURNAL``, :mod:`services.uplinks.journal`).

    ``envelope.meta["seq"]`` is the Sigfox seqNumber; ``now`` the request's network time. A
    device that is not an Orbit device gets no downlink (its uplink is kept all the same).
    Raises :class:`DeviceUnavailable` or ``psycopg.Error``; then nothing is kept (the network's
    retry is a new request).
    """
    device = envelope.device.upper()
    sigfox_seq = int(envelope.meta["seq"])
    _, value = envelope_message(envelope)
    try:
        # Pipeline mode: a statement whose result is not needed yet goes with the next one that
        # is; nothing waits for the server but the store's reads and the final sync (COMMIT).
        async with conn.pipeline():
            await conn.execute("BEGIN")
            answer = await _answer_in_transaction(
                conn,
                device,
                sigfox_seq,
                now,
                dedup_key,
                window_seconds,
                value,
                envelope,
                keep_journal,
            )
            await conn.execute("COMMIT")
    except BaseException:
        # Unavailable device, database error, cancellation: nothing is kept.
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            await conn.rollback()
        raise
    return answer


async def _answer_in_transaction(
    conn: Conn,
    device: str,
    sigfox_seq: int,
    now: float,
    dedup_key: str,
    window_seconds: int,
    value: bytes,
    envelope: UplinkEnvelope,
    keep_journal: bool,
) -> DownlinkAnswer:
    async with conn.cursor(row_factory=tuple_row) as known:
        await known.execute(ACTIVE_BY_ID, {"device": device})
        claim = await conn.execute(
            _CLAIM_AND_KEEP,
            {
                "key": dedup_key,
                "window": window_seconds,
                "topic": TOPIC_UPLINKS,
                "device": device,
                "value": value,
                "id": envelope.id,
                "journal": keep_journal,
            },
        )
        try:
            answer = await store.answer_request_in(
                conn, device, sigfox_seq, now, payload_hex=envelope.payload_hex
            )
        except UnknownDevice:  # not an Orbit device: no downlink, nothing written
            answer = store.RequestAnswer(None, fresh=False)
        row = await known.fetchone()  # came with the store's first read
    problem = device_problem(None if row is None else row[0])
    if problem is not None:
        raise DeviceUnavailable(problem)
    events = outcome_events(device, now, answer.outcomes)  # the request's own ack and count
    if answer.frame_hex is not None and answer.fresh:
        events.append(downlink_sent_event(device, answer.frame_hex, sigfox_seq, now))
    if events:
        await outbox.add_events(conn, TOPIC_DEVICE_EVENTS, events)
    fresh = await claim.fetchone() is not None
    return DownlinkAnswer(frame_hex=answer.frame_hex, duplicate=not fresh)
