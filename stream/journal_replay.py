"""The intake journal's replay timer: accepted uplinks not stored after a fault are published
again (:func:`services.uplinks.journal.replay_due`; it only loops).

At the worker's start (its first tick, ``journal_replay_interval`` after it has joined its
group) it replays every row accepted before it joined and older than
``journal_replay_at_start`` seconds (a broker that came back empty, a power cut); then, every
``journal_replay_interval``, the rows older than ``journal_replay_after`` (an API process killed
between its claim and Kafka's acknowledgement). Copies of uplinks that had been stored after
all are absorbed by the sinks.

Why before the join, not before the process started: the embedded broker (tansu) started again
empty acknowledges a produce request for a topic it does not have yet without keeping the
records. The API and the MQTT adapter publish to it while the restarted worker creates the
topics; what they were acknowledged meanwhile is in no topic. With the process's start as the
cutoff, those uplinks (128 in a ``make chaos`` broker kill, accepted in the 2 s after the
topics were created) waited a minute for the next replay; rows accepted before the join and
still not stored a tick after it are replayed at once. A row accepted before the join that did
reach the broker and is still not stored a tick later (a worker behind) is stored twice, which
the sinks absorb.
"""

from __future__ import annotations

import logging
import time

from services.platform import Settings
from services.uplinks import journal
from stream.app import HivepipeApp

log = logging.getLogger(__name__)


def first_cutoff(
    at_start: float, *, now: float, process_started: float, joined: float | None
) -> float:
    """How old (s) a journal row must be for the first replay: accepted before the worker
    joined its group (before it started, if it has not joined yet), and ``at_start`` old."""
    return max(at_start, now - (process_started if joined is None else joined))


def register(app: HivepipeApp, settings: Settings) -> None:
    """Register the replay timer on ``app``."""
    started: list[bool] = []
    process_started = time.time()

    @app.timer(interval=settings.journal_replay_interval)  # type: ignore[untyped-decorator]
    async def journal_replay() -> None:
        if not started:
            older_than = first_cutoff(
                settings.journal_replay_at_start,
                now=time.time(),
                process_started=process_started,
                joined=app.joined_at,
            )
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
