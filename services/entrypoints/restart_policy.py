"""When ``hivepipe up`` restarts a process that exited: the decisions, as pure functions of times.

A process that exits is started again after a delay that starts at ``initial_delay`` and doubles
at each exit that follows a short run, up to ``max_delay``; a run of ``stable_after`` seconds or
more starts the backoff (and the count of exits) over. ``crash_loop_exits`` exits within
``crash_loop_window`` seconds mark the process as crash-looping: it is reported once, then retried
every ``max_delay`` seconds until a run lasts ``stable_after`` seconds, never in a tight loop.
:mod:`services.entrypoints.supervised` applies these decisions to real processes; the tests apply
them to times alone.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The backoff and crash-loop thresholds (seconds, and a number of exits)."""

    initial_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 30.0
    crash_loop_exits: int = 5
    crash_loop_window: float = 60.0


@dataclass(frozen=True, slots=True)
class RestartHistory:
    """What a process's earlier exits leave behind: the last delay, the recent exit times."""

    delay: float = 0.0
    exits: tuple[float, ...] = ()
    crash_looping: bool = False


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """After an exit: wait ``delay`` seconds, then start again; the history to keep."""

    delay: float
    history: RestartHistory
    #: True at the exit that makes the process crash-looping (report it once, loudly).
    crash_loop_started: bool


def after_exit(
    policy: RestartPolicy, history: RestartHistory, *, started: float, exited: float
) -> RestartDecision:
    """The delay before the next start of a process that ran from ``started`` to ``exited``.

    A start that failed at once counts as an exit with ``started == exited``.
    """
    stable = exited - started >= policy.stable_after
    recent = () if stable else (t for t in history.exits if exited - t < policy.crash_loop_window)
    exits = (*recent, exited)
    crash_looping = len(exits) >= policy.crash_loop_exits or (history.crash_looping and not stable)
    if crash_looping:
        delay = policy.max_delay
    elif stable or history.delay == 0.0:
        delay = policy.initial_delay
    else:
        delay = min(history.delay * 2, policy.max_delay)
    return RestartDecision(
        delay=delay,
        history=RestartHistory(delay=delay, exits=exits, crash_looping=crash_looping),
        crash_loop_started=crash_looping and not history.crash_looping,
    )


def is_stable(policy: RestartPolicy, *, started: float, now: float) -> bool:
    """Whether a process started at ``started`` and still running has run long enough for its
    next exit to start the backoff over (and to end a crash loop)."""
    return now - started >= policy.stable_after


def describe_exit(returncode: int) -> str:
    """``exit code 1``, or ``signal SIGKILL`` for a process a signal ended (a negative code)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"
