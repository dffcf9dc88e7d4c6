"""Faust's statistics sensor, kept to what Faust itself reads.

Faust's ``Monitor`` does bookkeeping on every message and every stream event (counters by
topic, by stream and by task, time stamps, a deque of run times) for its web views, which a
hivepipe worker disables; its profile showed it at about 3 % of the worker's CPU under load.
:class:`LeanMonitor` keeps what Faust's consumer reads to detect a stalled stream (the time of
each partition's last event in); the pipeline's own figures are its Prometheus metrics.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from faust.sensors import Monitor


class LeanMonitor(Monitor):
    """Faust's ``Monitor`` without its per-message and per-event statistics."""

    #: Faust's own logger (else mode names one after this module): its "Starting..." is
    #: Faust's start-up chatter, quiet below the debug level (stream.app.Worker).
    logger = logging.getLogger("faust.hivepipe.monitor")

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        # Read by Faust's consumer to warn about a partition whose stream stopped processing.
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None
