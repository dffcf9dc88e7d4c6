"""Uplink deduplication shared by every ingest process, in PostgreSQL.

A key is claimed by the first process to insert it; a claim older than the window is reclaimed.
The row also keeps the answer given (a Sigfox downlink), so a duplicate is answered exactly like
the original.
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncConnection

from services.devices import ACTIVE_BY_ID
from services.platform import Message
from services.uplinks import journal

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
# statement's own transaction waits for the WAL flush only when ``%(commit)s`` is ``on``.
_CLAIM = CLAIM_UPSERT.format(
    source="SELECT %(key)s, now()"
    " FROM (SELECT set_config('synchronous_commit', %(commit)s, true)) AS commit_mode"
)

# The claim, its uplink's journal row (when ``%(journal)s``: services/uplinks/journal.py) in the
# same statement, so that a claim never exists without its uplink; data-modifying CTEs run
# whether or not the query reads them.
_CLAIM_JOURNALED = f"""
WITH claimed AS ({_CLAIM}), journaled AS ({journal.INSERT_CLAIMED.format(when="")})
SELECT EXISTS (SELECT FROM claimed) AS claimed
"""  # noqa: S608 (fixed fragments, no input)

# The same, with the device's state (one round trip per callback): ``claimed``, and ``active``
# (NULL for an unknown device). The uplink of an unknown or inactive device is not journaled:
# it goes to ``dead-letter``.
_CLAIM_CHECKING_DEVICE = f"""
WITH claimed AS ({_CLAIM}),
     journaled AS ({journal.INSERT_CLAIMED.format(when=f"AND ({ACTIVE_BY_ID}) IS TRUE")})
SELECT EXISTS (SELECT FROM claimed) AS claimed,
       ({ACTIVE_BY_ID}) AS active
"""  # noqa: S608 (fixed fragments, no input)


def _params(
    key: str, window_seconds: int, device: str, entry: tuple[str, Message] | None, durable: bool
) -> dict[str, Any]:
    # Durable (the journal kept until stored), the claim and its uplink are flushed before the
    # network is answered; otherwise losing the last few claims in a database crash only lets
    # a duplicate through, which the idempotent sinks absorb, while a flush per callback would
    # cap ingest at the disk's fsync rate.
    return {
        "key": key,
        "window": window_seconds,
        "device": device,
        "commit": "on" if entry is not None and durable else "off",
        "journal": entry is not None,
        "id": entry[0] if entry is not None else "",
        "value": entry[1][1] if entry is not None else b"",
    }


async def claim(
    conn: AsyncConnection[Row],
    key: str,
    window_seconds: int,
    *,
    entry: tuple[str, Message] | None = None,
    durable: bool = True,
) -> bool:
    """True when this uplink is new (or its last sighting is older than the window).

    ``entry`` (:func:`journal.journal_entry`): the uplink is journaled with its claim, and with
    ``durable`` the claim is committed waiting for the WAL flush; otherwise it is committed
    without waiting.
    """
    device = entry[1][0] if entry is not None else ""
    cur = await conn.execute(_CLAIM_JOURNALED, _params(key, window_seconds, device, entry, durable))
    row = await cur.fetchone()
    assert row is not None
    return bool(row["claimed"])


async def claim_checking_device(
    conn: AsyncConnection[Row],
    key: str,
    window_seconds: int,
    device: str,
    *,
    entry: tuple[str, Message] | None = None,
    durable: bool = True,
) -> tuple[bool, bool | None]:
    """:func:`claim`, and whether ``device`` is active (None: unknown), in one round trip;
    the uplink of an unknown or inactive device is not journaled."""
    params = _params(key, window_seconds, device, entry, durable)
    cur = await conn.execute(_CLAIM_CHECKING_DEVICE, params)
    row = await cur.fetchone()
    assert row is not None
    return bool(row["claimed"]), row["active"]


_RELEASE = f"WITH _ AS ({journal.DELETE_ONE}) DELETE FROM uplink_dedup WHERE key = %(key)s"  # noqa: S608


async def release(conn: AsyncConnection[Row], key: str, journal_id: str | None = None) -> None:
    """Forget a claim whose uplink could not be published, so the network's retry is accepted
    (and its journal row: the network was answered 503 and sends it again)."""
    await conn.execute(_RELEASE, {"key": key, "id": journal_id or ""})


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
