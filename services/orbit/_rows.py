"""The SQL behind ``store``: loading, locking and saving one device's configuration rows,
recording downlink answers, events and uplinks already applied. No rule lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.abc import Params
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from services.orbit.params import MODELS, default_active
from services.orbit.state import (
    DOWNLINKS_PER_WINDOW,
    DeviceConfig,
    Downlink,
    Outcome,
    PendingUpdate,
)

Conn = AsyncConnection[Any]

#: A request (or uplink) with the same Sigfox seqNumber within this window is the same one
#: (retries come after 1, 2 and 4 minutes; a seqNumber wraps after 4096 uplinks, weeks later).
SAME_UPLINK_WINDOW = timedelta(days=1)


class UnknownDevice(LookupError):
    """No such device, or it is not an Orbit device (the API answers 404)."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"{device}: {reason}")
        self.device = device
        self.reason = reason


async def fetchone(conn: Conn, query: str, params: Params) -> tuple[Any, ...] | None:
    """One row as a tuple, whatever the connection's row factory (the pool's gives dicts)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


def ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# One round trip: the row, its pending updates and the times of its last downlinks sent (the
# budget only needs the last DOWNLINKS_PER_WINDOW of them).
SELECT_CONFIG = """
SELECT d.model, c.active, c.seq,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                    'param', p.param, 'value_raw', p.value_raw, 'status', p.status,
                    'queued_at', extract(epoch FROM p.queued_at)::float8,
                    'attempts', p.attempts, 'seq', p.seq,
                    'sent_at', extract(epoch FROM p.sent_at)::float8,
                    'uplinks_since_send', p.uplinks_since_send)
                 ORDER BY p.queued_at, p.param, p.status)
                 FROM orbit_pending p WHERE p.device = c.device), '[]'::jsonb),
       ARRAY(SELECT extract(epoch FROM r.answered_at)::float8 FROM orbit_downlink_requests r
             WHERE r.device = c.device AND r.frame IS NOT NULL
             ORDER BY r.answered_at DESC LIMIT %(limit)s)
FROM orbit_config c JOIN devices d ON d.id = c.device
WHERE c.device = %(device)s
"""


def pending_update(row: Mapping[str, Any]) -> PendingUpdate:
    sent_at = row["sent_at"]
    return PendingUpdate(
        param=row["param"],
        value_raw=int(row["value_raw"]),
        status=row["status"],
        queued_at=float(row["queued_at"]),
        attempts=int(row["attempts"]),
        seq=row["seq"],
        sent_at=None if sent_at is None else float(sent_at),
        uplinks_since_send=int(row["uplinks_since_send"]),
    )


_LOCK = "SELECT 1 FROM orbit_config WHERE device = %s FOR UPDATE"
_RECORDED_ANSWER = (
    "SELECT frame FROM orbit_downlink_requests"
    " WHERE device = %s AND sigfox_seq_number = %s AND answered_at > %s"
    " ORDER BY answered_at DESC LIMIT 1"
)


def _config(row: tuple[Any, ...] | None) -> DeviceConfig | None:
    if row is None:
        return None
    model, active, seq, pending, downlinks = row
    return DeviceConfig(
        model=model,
        active={name: int(raw) for name, raw in active.items()},
        pending=tuple(pending_update(p) for p in pending),
        seq=seq,
        downlinks=tuple(sorted(downlinks)),
    )


async def select_config(conn: Conn, device: str, *, lock: bool) -> DeviceConfig | None:
    if lock:
        # Lock first, load in the next statement: under READ COMMITTED a statement that waited
        # for the lock would see the locked row's new version but the rest (pending updates,
        # downlinks) as of its own start, before the lock holder committed.
        if await fetchone(conn, _LOCK, (device,)) is None:
            return None
    return _config(
        await fetchone(conn, SELECT_CONFIG, {"device": device, "limit": DOWNLINKS_PER_WINDOW})
    )


async def locked_config_and_answer(
    conn: Conn, device: str, sigfox_seq_number: int, now: float
) -> tuple[DeviceConfig | None, tuple[str | None] | None]:
    """:func:`select_config` with the lock, and :func:`recorded_answer`, in one round trip.

    The three statements are sent before any result is read: in pipeline mode they travel
    together (the server still runs them in order, so the load and the answer are read after
    the lock is granted, as in :func:`select_config`). The config is None when the device has
    no config row (nothing locked: use :func:`locked_config` to create it).
    """
    async with (
        conn.cursor(row_factory=tuple_row) as lock,
        conn.cursor(row_factory=tuple_row) as load,
        conn.cursor(row_factory=tuple_row) as answer,
    ):
        await lock.execute(_LOCK, (device,))
        await load.execute(SELECT_CONFIG, {"device": device, "limit": DOWNLINKS_PER_WINDOW})
        await answer.execute(
            _RECORDED_ANSWER, (device, sigfox_seq_number, ts(now) - SAME_UPLINK_WINDOW)
        )
        locked = await lock.fetchone()
        config = _config(await load.fetchone())
        answered = await answer.fetchone()
    return (config if locked is not None else None), (None if answered is None else (answered[0],))


async def orbit_model(conn: Conn, device: str) -> str:
    row = await fetchone(conn, "SELECT model FROM devices WHERE id = %s", (device,))
    if row is None:
        raise UnknownDevice(device, "no such device")
    if row[0] not in MODELS:
        raise UnknownDevice(device, f"model {row[0]!r} is not an Orbit model")
    return str(row[0])


async def locked_config(conn: Conn, device: str, *, create: bool) -> DeviceConfig:
    """The device's config, its row locked. Without a row: created when ``create``, else the
    factory config (unlocked: nothing is pending, so there is nothing to change)."""
    config = await select_config(conn, device, lock=True)
    if config is not None:
        return config
    model = await orbit_model(conn, device)
    if not create:
        return DeviceConfig.new(model)
    await conn.execute(
        "INSERT INTO orbit_config (device, active) VALUES (%s, %s) ON CONFLICT (device) DO NOTHING",
        (device, Jsonb(default_active(model))),
    )
    config = await select_config(conn, device, lock=True)
    if config is None:  # the device was deleted meanwhile
        raise UnknownDevice(device, "no such device")
    return config


async def save(conn: Conn, device: str, old: DeviceConfig, new: DeviceConfig) -> None:
    """Write what changed from ``old`` to ``new`` (the budget is derived from the requests)."""
    if (new.active, new.seq) != (old.active, old.seq):
        await conn.execute(
            "UPDATE orbit_config SET active = %s, seq = %s, updated = now() WHERE device = %s",
            (Jsonb(dict(new.active)), new.seq, device),
        )
    if new.pending != old.pending:
        await conn.execute("DELETE FROM orbit_pending WHERE device = %s", (device,))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO orbit_pending (device, param, status, value_raw, queued_at,"
                " attempts, seq, sent_at, uplinks_since_send)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        device,
                        u.param,
                        u.status,
                        u.value_raw,
                        ts(u.queued_at),
                        u.attempts,
                        u.seq,
                        None if u.sent_at is None else ts(u.sent_at),
                        u.uplinks_since_send,
                    )
                    for u in new.pending
                ],
            )


async def write_events(
    conn: Conn, device: str, now: float, events: Iterable[tuple[str, dict[str, Any]]]
) -> None:
    rows = [(device, ts(now), kind, Jsonb(data)) for kind, data in events]
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO device_events (device, time, type, data) VALUES (%s, %s, %s, %s)",
                rows,
            )


async def record_outcomes(conn: Conn, device: str, now: float, outcomes: Iterable[Outcome]) -> None:
    """One device event per outcome; ``unchanged`` is no event (nothing happened)."""
    events = [(o.kind, o.event_data()) for o in outcomes if o.kind != "unchanged"]
    await write_events(conn, device, now, events)


async def first_sighting(
    conn: Conn, device: str, sigfox_seq_number: int, kind: str, uplink_time: float
) -> bool:
    """Record that uplink (device, seqNumber) was applied as ``kind``; False if it already was."""
    row = await fetchone(
        conn,
        _SIGHTING + " RETURNING 1",
        (device, sigfox_seq_number, kind, ts(uplink_time), SAME_UPLINK_WINDOW),
    )
    return row is not None


_SIGHTING = (
    "INSERT INTO orbit_uplinks_seen AS s (device, sigfox_seq_number, kind, seen_at)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (device, sigfox_seq_number, kind)"
    " DO UPDATE SET seen_at = EXCLUDED.seen_at WHERE s.seen_at < EXCLUDED.seen_at - %s"
)


async def note_sighting(
    conn: Conn, device: str, sigfox_seq_number: int, kind: str, uplink_time: float
) -> None:
    """:func:`first_sighting` without reading its result (no wait in pipeline mode), for an
    uplink known to be new."""
    await conn.execute(
        _SIGHTING, (device, sigfox_seq_number, kind, ts(uplink_time), SAME_UPLINK_WINDOW)
    )


async def recorded_answer(
    conn: Conn, device: str, sigfox_seq_number: int, now: float
) -> tuple[str | None] | None:
    """The answer (frame or None) already given to this request, or None if none was."""
    row = await fetchone(
        conn, _RECORDED_ANSWER, (device, sigfox_seq_number, ts(now) - SAME_UPLINK_WINDOW)
    )
    return None if row is None else (row[0],)


async def record_answer(
    conn: Conn, device: str, sigfox_seq_number: int, now: float, downlink: Downlink | None
) -> None:
    """Record the answer to a downlink request: the downlink sent, or None for none."""
    await conn.execute(
        "INSERT INTO orbit_downlink_requests"
        " (device, sigfox_seq_number, answered_at, seq, frame, updates)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (device, sigfox_seq_number, ts(now), None, None, None)
        if downlink is None
        else (
            device,
            sigfox_seq_number,
            ts(now),
            downlink.seq,
            downlink.frame_hex,
            Jsonb(dict(downlink.updates)),
        ),
    )


async def seq_answering(
    conn: Conn, device: str, sigfox_seq_number: int, uplink_time: float
) -> int | None:
    """The seq of the downlink sent in answer to this uplink, if it was a request that got one."""
    row = await fetchone(
        conn,
        "SELECT seq FROM orbit_downlink_requests"
        " WHERE device = %s AND sigfox_seq_number = %s AND frame IS NOT NULL"
        " AND answered_at BETWEEN %s AND %s ORDER BY answered_at DESC LIMIT 1",
        (
            device,
            sigfox_seq_number,
            ts(uplink_time) - SAME_UPLINK_WINDOW,
            ts(uplink_time) + SAME_UPLINK_WINDOW,
        ),
    )
    return None if row is None else int(row[0])
