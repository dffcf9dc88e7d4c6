"""The intake journal's replay timer: accepted uplinks not stored after a fault are published
again (:func:`services.uplinks.journal.replay_due`; it only loops).

At the worker's start it replays every row accepted before the process started and older than
``journal_replay_at_start`` seconds (a broker that came back empty, a power cut: what was
accepted since has reached the broker this process reads); then, every
``journal_replay_interval``, the rows older than ``journal_replay_after`` (an API process killed
between its claim and Kafka's acknowledgement). Copies of uplinks that had been stored after
all are absorbed by the sinks.
"""

from __future__ import annotations

import logging
import time

from services.platform import Settings
from services.uplinks import journal
from stream.app import HivepipeApp

log = logging.getLogger(__name__)


def register(app: HivepipeApp, settings: Settings) -> None:
    """Register the replay timer on ``app``."""
    started: list[bool] = []
    process_started = time.time()

    @app.timer(interval=settings.journal_replay_interval)  # type: ignore[untyped-decorator]
    async def journal_replay() -> None:
        first = not started
        if first:
            # The first tick comes once the worker has joined its group, seconds after it
            # started: the uplinks accepted meanwhile are on the broker, not lost with it.
            since_start = time.time() - process_started
            older_than = max(settings.journal_replay_at_start, since_start)
        else:
            older_than = settings.journal_replay_after
        try:
            # A restarted empty broker has lost the topics too: the publisher re-creates them.
            pool, publisher = await app.resources.open_repairing()
            await journal.replay_due(pool, publisher, settings.topic, older_than=older_than)
        except Exception as exc:  # the database or Kafka away: the next tick tries again
            log.warning("journal replay failed, retried at the next tick: %r", exc)
            return
        started.append(True)
