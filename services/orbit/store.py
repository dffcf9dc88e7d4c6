"""PostgreSQL persistence of Orbit device configurations (psycopg 3, async): the source of truth.

Each function runs in its own transaction (``conn.transaction()``: a savepoint when the caller
already opened one, so it may also run inside the caller's; give it an autocommit connection
otherwise); the ``*_in`` variants run in the caller's open transaction instead. A change locks
the device's ``orbit_config`` row (``SELECT ... FOR UPDATE``), loads its :class:`DeviceConfig`,
applies one pure rule of ``queue``/``planning``, writes what changed and one ``device_events``
row per outcome. The rules live in the pure modules, not here.

Schema: ``services/platform/migrations/0003_orbit.sql``. Device ids are upper-cased (Sigfox ids
are upper-case hex). Times are Unix seconds; pass the uplink's network time where it says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.orbit import _rows as rows
from services.orbit import planning, queue
from services.orbit._rows import Conn, UnknownDevice
from services.orbit.ack_frame import FRAME_PARAM_ACK, read_param_ack
from services.orbit.params import from_raw
from services.orbit.state import DeviceConfig, Outcome
from services.orbit.view import render_view

__all__ = [
    "Conn",
    "RequestAnswer",
    "UnknownDevice",
    "answer_downlink_request",
    "answer_request",
    "answer_request_in",
    "apply_ack_event",
    "apply_request_uplink",
    "delete_pending",
    "load_config",
    "note_uplink",
    "orbit_view",
    "register",
    "request_ack",
]


async def load_config(conn: Conn, device: str) -> DeviceConfig:
    """The device's configuration; the factory one when it has none yet (model from
    ``devices.model``). Raises :class:`UnknownDevice`."""
    device = device.upper()
    async with conn.transaction():
        config = await rows.select_config(conn, device, lock=False)
        return config or DeviceConfig.new(await rows.orbit_model(conn, device))


async def orbit_view(conn: Conn, device: str, now: float) -> dict[str, Any]:
    """The body of ``GET /v1/orbit/dev/{id}``. Raises :class:`UnknownDevice`."""
    device = device.upper()
    return render_view(device, await load_config(conn, device), now)


async def register(
    conn: Conn, device: str, params: Mapping[str, float], now: float
) -> tuple[Outcome, ...]:
    """Register updates ``{name: natural value}`` (rules 1-5) and write their device events.

    Raises :class:`services.orbit.params.InvalidParam` (nothing is registered) or
    :class:`UnknownDevice`.
    """
    device = device.upper()
    async with conn.transaction():
        config = await rows.locked_config(conn, device, create=True)
        new, outcomes = queue.register_updates(config, params, now)
        await rows.save(conn, device, config, new)
        await rows.record_outcomes(conn, device, now, outcomes)
    return outcomes


@dataclass(frozen=True, slots=True)
class RequestAnswer:
    """The answer to a downlink request: ``frame_hex`` (None: no downlink), whether it was
    decided now (``fresh``) or had been given to this request before, and what the request's own
    uplink did first (``outcomes``: its ack applied, its count towards in-flight updates)."""

    frame_hex: str | None
    fresh: bool
    outcomes: tuple[Outcome, ...] = ()


_ACK_PREFIX = f"{FRAME_PARAM_ACK:02x}"


def request_ack(payload_hex: str | None) -> tuple[int, tuple[tuple[int, int], ...]] | None:
    """The (downlink seq, (param id, raw value) pairs) of the parameter ack a downlink request
    carries, or None when its payload is no (valid) ack: the worker reports that one."""
    if not payload_hex or not payload_hex.startswith(_ACK_PREFIX):
        return None
    try:
        data = read_param_ack(bytes.fromhex(payload_hex))
    except ValueError:  # InvalidFrame, or a payload that is not hex
        return None
    return data["seq"], tuple((p["id"], p["raw"]) for p in data["params"])


def apply_request_uplink(
    config: DeviceConfig, payload_hex: str | None, now: float
) -> tuple[DeviceConfig, tuple[Outcome, ...], bool, bool]:
    """What a downlink request's own uplink does before it is answered, as the ack agent and
    the time-out count would do it later (pure): the ack it carries is applied, then it counts
    as an uplink for the updates already in flight (the second uplink after a send re-queues an
    unanswered one, which this answer can then carry). Returns the config, the outcomes, and
    whether the ack and the count were applied (their sightings must be recorded, so that the
    worker does not apply them again)."""
    outcomes: tuple[Outcome, ...] = ()
    ack = request_ack(payload_hex)
    if ack is not None:
        config, outcomes = queue.apply_ack(config, ack[0], ack[1], now)
    counted = any(u.status == "in_flight" for u in config.pending)
    if counted:
        config, more = queue.note_uplink(config, now)
        outcomes += more
    return config, outcomes, ack is not None, counted


async def answer_downlink_request(
    conn: Conn, device: str, sigfox_seq_number: int, now: float
) -> str | None:
    """The 16 hex digits of the downlink answering request (device, seqNumber), or None.

    See :func:`answer_request`."""
    return (await answer_request(conn, device, sigfox_seq_number, now)).frame_hex


async def answer_request(
    conn: Conn, device: str, sigfox_seq_number: int, now: float
) -> RequestAnswer:
    """Answer downlink request (device, seqNumber), in its own transaction (a savepoint in the
    caller's): see :func:`answer_request_in`."""
    async with conn.transaction():
        return await answer_request_in(conn, device, sigfox_seq_number, now)


async def answer_request_in(
    conn: Conn,
    device: str,
    sigfox_seq_number: int,
    now: float,
    *,
    payload_hex: str | None = None,
) -> RequestAnswer:
    """Answer downlink request (device, seqNumber) in the caller's open transaction.

    A request already answered (a retry, a duplicate) gets the same answer and changes nothing.
    Otherwise, under the device's row lock: apply the request's own uplink
    (:func:`apply_request_uplink`: the ack in ``payload_hex``, the time-out count), plan the
    downlink, mark its updates in flight, record the answer and a ``downlink_sent`` event.
    Concurrent requests for one device are serialised by the lock, so no update is sent twice
    and no seq is skipped or reused.

    In pipeline mode this waits for one round trip once the device has a config row (the lock,
    the load and the recorded answer travel together); the writes go with the caller's commit.
    Raises :class:`UnknownDevice` before writing anything.
    """
    device = device.upper()
    config, answered = await rows.locked_config_and_answer(conn, device, sigfox_seq_number, now)
    if config is None:  # the device's first change: create its row
        config = await rows.locked_config(conn, device, create=True)
        answered = await rows.recorded_answer(conn, device, sigfox_seq_number, now)
    if answered is not None:
        return RequestAnswer(answered[0], fresh=False)
    loaded = config
    config, outcomes, acked, counted = apply_request_uplink(config, payload_hex, now)
    # No result is read: a fresh request's uplink has not been seen (it reaches Kafka through
    # this transaction's outbox), so these only keep the worker from applying it again.
    for kind, applied in (("ack", acked), ("count", counted)):
        if applied:
            await rows.note_sighting(conn, device, sigfox_seq_number, kind, now)
    await rows.record_outcomes(conn, device, now, outcomes)
    downlink = planning.plan_downlink(config, now)
    await rows.record_answer(conn, device, sigfox_seq_number, now, downlink)
    if downlink is None:
        await rows.save(conn, device, loaded, config)
        return RequestAnswer(None, fresh=True, outcomes=outcomes)
    await rows.save(conn, device, loaded, planning.mark_sent(config, downlink, now))
    sent = {
        "seq": downlink.seq,
        "frame": downlink.frame_hex,
        "params": {name: from_raw(name, raw) for name, raw in downlink.updates},
        "sigfox_seq_number": sigfox_seq_number,
    }
    await rows.write_events(conn, device, now, [("downlink_sent", sent)])
    return RequestAnswer(downlink.frame_hex, fresh=True, outcomes=outcomes)


async def apply_ack_event(
    conn: Conn,
    device: str,
    seq: int,
    params: Iterable[tuple[int, int]],
    now: float,
    *,
    sigfox_seq_number: int | None = None,
) -> tuple[Outcome, ...]:
    """Apply a parameter ack of downlink ``seq`` ((param id, raw value) pairs, as the codec's
    ``param_ack`` event has them) received at ``now`` (the uplink's network time).

    With ``sigfox_seq_number``, an uplink already applied (a replay) changes nothing: without it,
    a replayed old ack would set old values again.
    """
    device = device.upper()
    async with conn.transaction():
        config = await rows.locked_config(conn, device, create=True)
        if sigfox_seq_number is not None and not await rows.first_sighting(
            conn, device, sigfox_seq_number, "ack", now
        ):
            return ()
        new, outcomes = queue.apply_ack(config, seq, params, now)
        await rows.save(conn, device, config, new)
        await rows.record_outcomes(conn, device, now, outcomes)
    return outcomes


async def note_uplink(
    conn: Conn, device: str, sigfox_seq_number: int, now: float
) -> tuple[Outcome, ...]:
    """Count an uplink of the device, after :func:`apply_ack_event` for the ack it carried.

    ``now`` is the uplink's network time (Sigfox ``time``), not when it is processed. An uplink
    counts once per (device, seqNumber), however often it is replayed; the downlink request an
    update was sent in answer to does not count for it (nor does any uplink older than the send).
    """
    device = device.upper()
    async with conn.transaction():
        config = await rows.locked_config(conn, device, create=False)
        if not any(u.status == "in_flight" for u in config.pending):
            return ()  # nothing to time out; a replay later is older than any new send
        if not await rows.first_sighting(conn, device, sigfox_seq_number, "count", now):
            return ()
        answered_with = await rows.seq_answering(conn, device, sigfox_seq_number, now)
        new, outcomes = queue.note_uplink(config, now, answered_with_seq=answered_with)
        await rows.save(conn, device, config, new)
        await rows.record_outcomes(conn, device, now, outcomes)
    return outcomes


async def delete_pending(conn: Conn, device: str, param: str, *, now: float | None = None) -> bool:
    """An operator deletes the pending updates of ``param``; False when none was pending.

    Raises :class:`services.orbit.params.InvalidParam` for an unknown parameter name and
    :class:`UnknownDevice`. ``now`` (default: the clock) dates the ``param_dropped`` events.
    """
    device = device.upper()
    when = time.time() if now is None else now
    async with conn.transaction():
        config = await rows.locked_config(conn, device, create=False)
        new, outcomes = queue.delete_pending(config, param)
        await rows.save(conn, device, config, new)
        await rows.record_outcomes(conn, device, when, outcomes)
    return bool(outcomes)
