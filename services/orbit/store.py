"""PostgreSQL persistence of Orbit device configurations (psycopg 3, async): the source of truth.

Each function runs in its own transaction (``conn.transaction()``: a savepoint when the caller
already opened one, so it may also run inside the caller's; give it an autocommit connection
otherwise); the ``*_in`` variants run in the caller's open transaction instead. A change locks
the device's ``orbit_config`` row (``SELECT ... FOR UPDATE``), loads its :class:`DeviceConfig`,
applies one pure rule of ``queue``/``planning``, writes what changed and one ``device_events``
row per outcome. The rules live in the pure modules, not here.

Schema: ``services/storage/migrations/0003_orbit.sql``. Device ids are upper-cased (Sigfox ids
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
    "delete_pending",
    "load_config",
    "note_uplink",
    "orbit_view",
    "register",
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
    """The answer to a downlink request: ``frame_hex`` (None: no downlink) and whether it was
    decided now (``fresh``) or had been given to this request before."""

    frame_hex: str | None
    fresh: bool


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
    conn: Conn, device: str, sigfox_seq_number: int, now: float
) -> RequestAnswer:
    """Answer downlink request (device, seqNumber) in the caller's open transaction.

    A request already answered (a retry, a duplicate) gets the same answer and changes nothing.
    Otherwise, under the device's row lock: plan the downlink, mark its updates in flight, record
    the answer and a ``downlink_sent`` event. Concurrent requests for one device are serialised
    by the lock, so no update is sent twice and no seq is skipped or reused.

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
    downlink = planning.plan_downlink(config, now)
    await rows.record_answer(conn, device, sigfox_seq_number, now, downlink)
    if downlink is None:
        return RequestAnswer(None, fresh=True)
    await rows.save(conn, device, config, planning.mark_sent(config, downlink, now))
    sent = {
        "seq": downlink.seq,
        "frame": downlink.frame_hex,
        "params": {name: from_raw(name, raw) for name, raw in downlink.updates},
        "sigfox_seq_number": sigfox_seq_number,
    }
    await rows.write_events(conn, device, now, [("downlink_sent", sent)])
    return RequestAnswer(downlink.frame_hex, fresh=True)


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
