"""How fast things arrive, to decide whether waiting for more is worth it.

The API's claim statements (services/uplinks/claims.py) and the MQTT ingest's batches
(ingest/mqtt/bridge.py) may linger to gather what arrives meanwhile: one commit and one Kafka
request for many. That pays only when more will come within the linger; a rare arrival
waits for nothing. :class:`ArrivalRate` counts arrivals in two half-second windows (two
counters, no list of timestamps) and says whether ``linger`` would gather a few more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: A linger is worth it when this many more arrivals are expected within it.
WORTH: Final = 4


@dataclass(slots=True)
class ArrivalRate:
    """Arrivals per second over the current and the previous ``window`` (s)."""

    window: float = 0.5
    _current: int = 0
    _previous: int = 0
    _start: float = -math.inf

    def arrived(self, now: float, count: int = 1) -> None:
        """Count ``count`` arrivals at ``now`` (a monotonic clock, in seconds)."""
        if now - self._start >= self.window:
            # The window just ended becomes the previous one; an older one counts as empty.
            self._previous = self._current if now - self._start < 2 * self.window else 0
            self._current = 0
            self._start = now
        self._current += count

    def per_second(self) -> float:
        return (self._current + self._previous) / (2 * self.window)

    def worth_lingering(self, linger: float) -> bool:
        """Whether ``WORTH`` or more arrivals are expected within ``linger`` seconds."""
        return linger > 0 and self.per_second() * linger >= WORTH
