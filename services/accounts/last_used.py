"""``last_used`` of API keys without a database write per request.

Each request only notes the time in a dict (:meth:`LastUsed.touch`); a background task of the API
process writes the pending times in one statement every few seconds and once more at shutdown
(:meth:`LastUsed.flush`). Readers in the same process (the key listing, the ``recently_used``
check before a delete) merge :meth:`LastUsed.pending` so they never see a stale value.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]

_FLUSH = """
UPDATE api_keys k SET last_used = GREATEST(k.last_used, v.t)
FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, t)
WHERE k.id = v.id
"""


class LastUsed:
    """Pending ``last_used`` times by key id, flushed in batches."""

    def __init__(self) -> None:
        self._pending: dict[int, float] = {}

    def touch(self, key_id: int, now: float | None = None) -> None:
        """Note that the key was used now (O(1), no I/O)."""
        self._pending[key_id] = time.time() if now is None else now

    def pending(self, key_id: int) -> datetime | None:
        """The time noted but not yet written for this key, if any."""
        noted = self._pending.get(key_id)
        return None if noted is None else datetime.fromtimestamp(noted, UTC)

    async def flush(self, conn: AsyncConnection[Row]) -> int:
        """Write every pending time in one statement; returns how many keys it touched.

        On a database error the times are kept for the next flush.
        """
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            await conn.execute(
                _FLUSH,
                (list(batch), [datetime.fromtimestamp(t, UTC) for t in batch.values()]),
            )
        except BaseException:
            for key_id, noted in batch.items():
                self._pending[key_id] = max(noted, self._pending.get(key_id, noted))
            raise
        return len(batch)
