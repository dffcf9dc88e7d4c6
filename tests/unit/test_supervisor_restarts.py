"""services.entrypoints.restart_policy and supervised: when ``hivepipe up`` restarts what exited.

The decisions are pure functions of times; :class:`Supervised` is driven here with a fake clock
and fake processes, so a crash loop of ten minutes takes no time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY

from services.entrypoints.restart_policy import (
    RestartHistory,
    RestartPolicy,
    after_exit,
    describe_exit,
)
from services.entrypoints.supervised import Supervised

POLICY = RestartPolicy()
_pids = itertools.count(1000)


def exits_after(runs: list[float], policy: RestartPolicy = POLICY) -> list[float]:
    """The delays chosen after processes that ran ``runs[i]`` seconds, one after the other."""
    history, now, delays = RestartHistory(), 0.0, []
    for ran in runs:
        decision = after_exit(policy, history, started=now, exited=now + ran)
        history, now = decision.history, now + ran + decision.delay
        delays.append(decision.delay)
    return delays


def test_the_delay_doubles_after_short_runs_up_to_the_maximum() -> None:
    policy = RestartPolicy(crash_loop_exits=100)  # no crash loop: the doubling alone
    delays = exits_after([1.0] * 9, policy)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_long_enough_run_starts_the_backoff_over() -> None:
    assert exits_after([1.0, 1.0, 1.0, 45.0, 1.0]) == [0.5, 1.0, 2.0, 0.5, 1.0]


def test_five_exits_within_a_minute_are_a_crash_loop_reported_once() -> None:
    history, now, reports, delays = RestartHistory(), 0.0, [], []
    for _ in range(8):
        decision = after_exit(POLICY, history, started=now, exited=now + 0.1)
        history, now = decision.history, now + 0.1 + decision.delay
        reports.append(decision.crash_loop_started)
        delays.append(decision.delay)
    assert reports == [False, False, False, False, True, False, False, False]
    assert delays[4:] == [30.0] * 4  # at the maximum, never a tight loop
    assert history.crash_looping
    # Fewer than five exits in the window now, but it still has not stayed up: still looping.
    assert len(history.exits) < POLICY.crash_loop_exits


def test_a_crash_loop_ends_with_a_run_that_lasts() -> None:
    looping = RestartHistory(delay=30.0, exits=(0.0, 30.0), crash_looping=True)
    short = after_exit(POLICY, looping, started=61.0, exited=62.0)
    assert short.delay == 30.0
    assert short.history.crash_looping
    stable = after_exit(POLICY, looping, started=61.0, exited=200.0)
    assert stable.delay == 0.5
    assert not stable.history.crash_looping
    assert stable.history.exits == (200.0,)  # the count of exits starts over too


def test_a_start_that_fails_at_once_counts_as_an_exit() -> None:
    first = after_exit(POLICY, RestartHistory(), started=5.0, exited=5.0)
    assert first.delay == 0.5
    assert after_exit(POLICY, first.history, started=5.5, exited=5.5).delay == 1.0


@pytest.mark.parametrize(
    ("code", "text"),
    [(0, "exit code 0"), (1, "exit code 1"), (-9, "signal SIGKILL"), (-15, "signal SIGTERM")],
)
def test_an_exit_is_described_by_its_code_or_signal(code: int, text: str) -> None:
    assert describe_exit(code) == text


# --- Supervised, with fake processes and a fake clock -------------------------------------------


@dataclass
class FakeProcess:
    pid: int
    code: int | None = None
    stopped: bool = False

    def poll(self) -> int | None:
        return self.code

    def stop(self) -> None:
        self.stopped = True
        if self.code is None:
            self.code = -15

    def kill(self) -> None:
        self.stopped = True
        if self.code is None:
            self.code = -9


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def starter(started: list[FakeProcess], *, exit_at_once: bool = False) -> Callable[[], FakeProcess]:
    def start() -> FakeProcess:
        process = FakeProcess(next(_pids), code=1 if exit_at_once else None)
        started.append(process)
        return process

    return start


def restarts(role: str) -> float:
    return REGISTRY.get_sample_value("hivepipe_role_restarts_total", {"role": role}) or 0.0


def crash_looping(role: str) -> float:
    return REGISTRY.get_sample_value("hivepipe_role_crash_looping", {"role": role}) or 0.0


def test_a_killed_process_is_logged_and_restarted_after_the_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock, started = Clock(), []
    child = Supervised("worker", "t-worker", starter(started), clock=clock)
    first = started[0]
    assert restarts("t-worker") == 0.0  # exported from the start
    clock.now = 100.0
    first.code = -9
    child.check()
    assert child.process is None
    assert f"role worker (pid {first.pid}) exited: signal SIGKILL; restarting in 0.5 s" in (
        caplog.text
    )
    clock.now = 100.4
    child.check()
    assert len(started) == 1  # not yet
    clock.now = 100.5
    child.check()
    assert len(started) == 2
    assert child.process is started[1]
    assert f"role worker restarted (pid {started[1].pid})" in caplog.text
    assert restarts("t-worker") == 1.0


def test_a_server_that_fails_to_start_is_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, attempts = Clock(), []

    def start() -> FakeProcess:
        attempts.append(clock.now)
        if len(attempts) < 4:
            raise RuntimeError("shared memory still in use")
        return FakeProcess(next(_pids))

    running = FakeProcess(next(_pids), code=-9)
    child = Supervised("postgres", "t-postgres", start, running=running, clock=clock)
    while child.process is None or len(attempts) < 4:
        child.check()
        clock.now += 0.125  # exact in binary: no drift over the steps
    waits = [b - a for a, b in itertools.pairwise([0.0, *attempts])]
    assert waits == [0.5, 1.0, 2.0, 4.0]
    assert "role postgres exited: start failed (shared memory still in use)" in caplog.text
    assert restarts("t-postgres") == 4.0


def test_a_crash_loop_is_reported_once_and_never_restarted_in_a_tight_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, started = Clock(), []
    child = Supervised("mqtt", "t-mqtt", starter(started, exit_at_once=True), clock=clock)
    while clock.now < 600.0:  # ten minutes of the supervisor's loop
        child.check()
        clock.now += 0.2
    assert child.crash_looping
    assert crash_looping("t-mqtt") == 1.0
    assert caplog.text.count("role mqtt keeps crashing: 5 exits within 60 s") == 1
    # 0.5 + 1 + 2 + 4 s of backoff, then one start every 30 s: about 24 starts, not thousands.
    assert 20 <= len(started) <= 25


def test_a_crash_looping_process_that_stays_up_is_reported_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, started = Clock(), []
    child = Supervised("api-1", "t-api", starter(started, exit_at_once=True), clock=clock)
    while not child.crash_looping:
        child.check()
        clock.now += 0.2
    while child.process is None:  # the next start: this one stays up
        child._start = starter(started)
        child.check()
        clock.now += 0.2
    clock.now += POLICY.stable_after
    child.check()
    assert not child.crash_looping
    assert crash_looping("t-api") == 0.0
    assert "role api-1 is up again after crash-looping" in caplog.text


def test_stop_stops_the_process_and_cancels_a_pending_restart() -> None:
    clock, started = Clock(), []
    child = Supervised("mqtt", "t-stop", starter(started), clock=clock)
    started[0].code = 1
    child.check()  # exit noted, restart pending
    child.stop()
    clock.now += 60.0
    child.check()
    assert len(started) == 1
    running = Supervised("mqtt", "t-stop", starter(started), clock=clock)
    running.stop()
    assert started[1].stopped


@pytest.mark.parametrize("kill", [False, True])
def test_a_recycle_starts_a_new_process_at_once_without_counting_a_crash(kill: bool) -> None:
    clock, started = Clock(), []
    child = Supervised("worker", "t-recycled", starter(started), clock=clock)
    first, generation = started[0], child.generation
    child.recycle("the broker started again", kill=kill)
    assert first.stopped
    assert first.code == (-9 if kill else -15)
    assert len(started) == 2
    assert child.process is started[1]
    assert child.generation == generation + 1
    assert restarts("t-recycled") == 0.0
    child.check()  # the stopped process is not taken for an exit
    assert len(started) == 2
