"""A process ``hivepipe up`` keeps running: started again after it exits, logged and counted.

:class:`Supervised` holds a running process (a role, or an embedded server) and how to start it
again. :meth:`Supervised.check`, called in the supervisor's loop, notices an exit, logs it (role,
pid, exit code or signal, next try), waits the delay :mod:`services.entrypoints.restart_policy`
chose, then starts the process again and counts it in ``hivepipe_role_restarts_total{role}``.
Nothing here runs in a thread or a signal handler: a restart never races the shutdown, which
simply stops calling :meth:`~Supervised.check` before it stops the processes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter, Gauge

from services.entrypoints.restart_policy import (
    RestartHistory,
    RestartPolicy,
    after_exit,
    describe_exit,
    is_stable,
)

log = logging.getLogger(__name__)

ROLE_RESTARTS = Counter(
    "hivepipe_role_restarts",
    "Processes hivepipe up started again after they exited, by role",
    ["role"],
)
ROLE_CRASH_LOOPING = Gauge(
    "hivepipe_role_crash_looping",
    "Processes of the role that keep crashing (restarted at the longest delay until one stays up)",
    ["role"],
)


class Process(Protocol):
    """What the supervisor needs of a running process (a role's, or an embedded server's)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The exit code once the process has ended (negative: the signal), else None."""

    def stop(self) -> None:
        """Ask it to stop, kill it when it does not, and wait for it."""

    def kill(self) -> None:
        """Kill it at once (SIGKILL) and wait for it."""


class Supervised:
    """A process of ``role`` named ``name`` (``api-2``), kept running by :meth:`check`."""

    def __init__(
        self,
        name: str,
        role: str,
        start: Callable[[], Process],
        *,
        running: Process | None = None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics_port: int | None = None,
    ) -> None:
        self.name = name
        self.role = role
        #: Where the process serves its Prometheus metrics (``hivepipe status`` reads them).
        self.metrics_port = metrics_port
        self.policy = policy or RestartPolicy()
        self.restarts = 0
        #: Incremented by every start: a change tells the supervisor this process is a new one.
        self.generation = 0 if running is None else 1
        self._start = start
        self._clock = clock
        self._history = RestartHistory()
        self._process: Process | None = running
        self._started = clock()
        self._due: float | None = None
        ROLE_RESTARTS.labels(role)  # exported at 0 from the start, so an alert can use rate()
        ROLE_CRASH_LOOPING.labels(role)
        if running is None:
            self._launch()

    @property
    def process(self) -> Process | None:
        """The running process, None while a restart is pending."""
        return self._process

    @property
    def crash_looping(self) -> bool:
        return self._history.crash_looping

    def check(self) -> None:
        """Note an exit and schedule the restart, or restart when it is due; never blocks long
        (a server's start waits for it to listen)."""
        now = self._clock()
        if self._process is not None:
            code = self._process.poll()
            if code is None:
                self._note_running(now)
                return
            self._exited(self._process.pid, describe_exit(code), now)
        if self._due is not None and now >= self._due:
            self._due = None
            self.restarts += 1
            ROLE_RESTARTS.labels(self.role).inc()
            if self._launch():
                assert self._process is not None
                log.info("role %s restarted (pid %d)", self.name, self._process.pid)

    def recycle(self, why: str, *, kill: bool = False) -> None:
        """Stop the process (``kill``: at once, for a process with nothing left to finish) and
        start it again now; not an exit, not counted as a crash."""
        log.warning("role %s restarted: %s", self.name, why)
        self._due = None
        if self._process is not None:
            if kill:
                self._process.kill()
            else:
                self._process.stop()
            self._process = None
        self._launch()

    def stop(self) -> None:
        """Stop the process (no restart follows: the caller no longer calls :meth:`check`)."""
        self._due = None
        if self._process is not None:
            self._process.stop()

    def _launch(self) -> bool:
        self._started = self._clock()
        try:
            self._process = self._start()
        except Exception as exc:  # a server that did not come up: an exit like any other
            self._process = None
            self._exited(None, f"start failed ({exc})", self._clock())
            return False
        self.generation += 1
        return True

    def _note_running(self, now: float) -> None:
        if self._history.crash_looping and is_stable(self.policy, started=self._started, now=now):
            log.warning("role %s is up again after crash-looping", self.name)
            self._history = dataclasses.replace(self._history, delay=0.0, crash_looping=False)
            ROLE_CRASH_LOOPING.labels(self.role).dec()

    def _exited(self, pid: int | None, how: str, now: float) -> None:
        self._process = None
        decision = after_exit(self.policy, self._history, started=self._started, exited=now)
        self._history = decision.history
        self._due = now + decision.delay
        who = f"role {self.name}" + (f" (pid {pid})" if pid is not None else "")
        log.warning("%s exited: %s; restarting in %.1f s", who, how, decision.delay)
        if decision.crash_loop_started:
            ROLE_CRASH_LOOPING.labels(self.role).inc()
            log.error(
                "role %s keeps crashing: %d exits within %.0f s; retrying every %.0f s until "
                "it stays up (see its log)",
                self.name,
                len(decision.history.exits),
                self.policy.crash_loop_window,
                self.policy.max_delay,
            )
