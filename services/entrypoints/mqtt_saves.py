"""``hivepipe up``'s part of the embedded Mosquitto's saves on request (``on-receipt``,
services/platform/broker_saves.py): while an MQTT adapter is away, what devices publish is
queued for its session and no adapter asks for a save, so the supervisor does. It subscribes
to every topic (QoS 0) on a connection of its own (:class:`services.platform.Waker`) and asks
for a save as each message comes, then ends Mosquitto's wait with a PINGREQ: the message is on
disk a fraction of a millisecond after Mosquitto acknowledged it, as ``every-change`` does for
a session that is away, and only while one is.

An adapter counts as away while its process is down, and for ``GRACE`` seconds after each of
its starts and each start of Mosquitto (it connects and subscribes again meanwhile); after
that its own requests cover what it receives. With no adapter away it sends nothing and
holds no connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from services.platform import BrokerSaves, Waker

#: How long after an adapter's (or Mosquitto's) start the supervisor still asks for saves (s):
#: an adapter's start (imports, connecting, subscribing) takes 2 to 4 s here.
GRACE = 15.0
#: How often it checks whether an adapter is away, and how long it waits for a message at a
#: time while one is (s). Without a waker (tests), how often it asks for a save meanwhile.
EVERY = 0.01


class Watched(Protocol):
    @property
    def process(self) -> object | None: ...

    @property
    def generation(self) -> int: ...


class SavesWhileAway:
    """Call :meth:`start`; :meth:`stop` at the end. :meth:`away` is the rule, for tests."""

    def __init__(
        self,
        saves: BrokerSaves,
        adapters: Sequence[Watched],
        broker: Watched | None,
        *,
        waker: Waker | None = None,
        grace: float = GRACE,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.saves = saves
        self.waker = waker
        self.watched = [*adapters, *([broker] if broker is not None else [])]
        self.grace = grace
        self.every = every
        self._clock = clock
        now = clock()
        #: Per watched process: the generation last seen, and when it changed.
        self._seen = [(w.generation, now) for w in self.watched]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-saves", daemon=True)

    def away(self) -> bool:
        """Whether an adapter is away now: a watched process down, or started within grace."""
        now = self._clock()
        away = False
        for i, watched in enumerate(self.watched):
            generation, since = self._seen[i]
            if watched.generation != generation:
                self._seen[i] = (watched.generation, now)
                since = now
            if watched.process is None or now - since < self.grace:
                away = True
        return away

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)
        self.saves.close()
        if self.waker is not None:
            self.waker.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.away():
                if self.waker is not None:
                    self.waker.close()
                self._stop.wait(self.every)
            elif self.waker is None:
                self._stop.wait(self.every)
                self.saves.save_now()
            else:
                fresh = not self.waker.connected
                published = self.waker.published(self.every)
                if published < 0:  # Mosquitto not up (relaunching): ask anyway, then retry
                    self.saves.save_now()
                    self._stop.wait(self.every)
                elif published or fresh:
                    self._save()

    def _save(self) -> None:
        if self.saves.save_now() and self.waker is not None:
            self.waker.ping()
