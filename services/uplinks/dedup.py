"""Uplink deduplication shared by every ingest process, in PostgreSQL.

A key is claimed by the first process to insert it; a claim older than the window is reclaimed.
The row also keeps the answer given (a Sigfox downlink), so a duplicate is answered exactly like
the original.
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncConnection

Row = dict[str, Any]

#: The claim: insert the key, or take over a sighting older than the window; returns the key
#: when claimed. ``{source}`` supplies the row (key, seen); callers may embed it in a CTE.
CLAIM_UPSERT = """
INSERT INTO uplink_dedup (key, seen) {source}
ON CONFLICT (key) DO UPDATE SET seen = excluded.seen, response = NULL
    WHERE uplink_dedup.seen < now() - make_interval(secs => %(window)s)
RETURNING key
"""

# ``set_config(..., true)`` is ``SET LOCAL`` inside the statement itself: one round trip, and the
# statement's own transaction commits without waiting for the WAL flush.
_CLAIM = CLAIM_UPSERT.format(
    source="SELECT %(key)s, now()"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
)


# The claim and the device's state in one statement (one round trip per callback): ``claimed``,
# and ``active`` (NULL for an unknown device). The data-modifying CTE runs whatever the device.
_CLAIM_CHECKING_DEVICE = f"""
WITH claimed AS ({_CLAIM})
SELECT EXISTS (SELECT FROM claimed) AS claimed,
       (SELECT active FROM devices WHERE id = %(device)s) AS active
"""  # noqa: S608 (a fixed fragment, no input)


async def claim(conn: AsyncConnection[Row], key: str, window_seconds: int) -> bool:
    """True when this uplink is new (or its last sighting is older than the window).

    The claim is committed without waiting for the WAL flush: losing the last few claims in a
    database crash only lets a duplicate through, which the idempotent sinks absorb, while a
    flush per callback would cap ingest at the disk's fsync rate.
    """
    cur = await conn.execute(_CLAIM, {"key": key, "window": window_seconds})
    return await cur.fetchone() is not None


async def claim_checking_device(
    conn: AsyncConnection[Row], key: str, window_seconds: int, device: str
) -> tuple[bool, bool | None]:
    """:func:`claim`, and whether ``device`` is active (None: unknown), in one round trip."""
    cur = await conn.execute(
        _CLAIM_CHECKING_DEVICE, {"key": key, "window": window_seconds, "device": device}
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row["claimed"]), row["active"]


async def release(conn: AsyncConnection[Row], key: str) -> None:
    """Forget a claim whose uplink could not be published, so the network's retry is accepted."""
    await conn.execute("DELETE FROM uplink_dedup WHERE key = %s", (key,))


async def remember_response(conn: AsyncConnection[Row], key: str, response: Any) -> None:
    """Keep the answer given to the original, for its duplicates."""
    await conn.execute(
        "UPDATE uplink_dedup SET response = %s::jsonb WHERE key = %s",
        (orjson.dumps(response).decode(), key),
    )


async def previous_response(conn: AsyncConnection[Row], key: str) -> Any:
    """The answer given to the original of a duplicate (None when it was a 204)."""
    cur = await conn.execute("SELECT response FROM uplink_dedup WHERE key = %s", (key,))
    row = await cur.fetchone()
    return None if row is None else row["response"]


async def purge(conn: AsyncConnection[Row], window_seconds: int) -> int:
    """Delete claims older than the window; returns how many."""
    cur = await conn.execute(
        "DELETE FROM uplink_dedup WHERE seen < now() - make_interval(secs => %s)",
        (window_seconds,),
    )
    return cur.rowcount
