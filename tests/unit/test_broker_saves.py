"""Saves of the embedded Mosquitto's store on request (``on-receipt``): who sends SIGUSR1 to
which process, and how often (services/platform/broker_saves.py,
services/entrypoints/mqtt_saves.py). The process here is a stand-in that counts the signals;
tests/chaos/test_broker_restart.py asks a real Mosquitto."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.entrypoints.mqtt_saves import SavesWhileAway
from services.platform import BrokerSaves, SaveSoon, write_pid_file

# Counts SIGUSR1 and prints the count on each: started with the configuration's path in its
# command line, as Mosquitto is (``mosquitto -c <conf>``).
COUNTER = """
import signal, sys, time
n = 0
def on_usr1(*_):
    global n
    n += 1
    print(n, flush=True)
signal.signal(signal.SIGUSR1, on_usr1)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


class Stand:
    def __init__(self, conf: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", COUNTER, "-c", str(conf)], stdout=subprocess.PIPE, bufsize=0
        )
        self.count = 0
        self._out = b""
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"ready"

    def signals(self, expected: int) -> int:
        """The count printed last once it is ``expected`` (what it is after 5 s at most)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + 5
        while self.count < expected:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            self._out += os.read(fd, 4096)
            *lines, self._out = self._out.split(b"\n")
            self.count = max([self.count, *(int(line) for line in lines)])
        return self.count

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def stand(tmp_path: Path) -> Iterator[tuple[Stand, Path]]:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("")
    s = Stand(conf)
    pid_file = tmp_path / "mosquitto.pid"
    write_pid_file(pid_file, s.proc.pid, conf)
    yield s, pid_file
    s.stop()


def test_signals_the_process_the_pid_file_names(stand: tuple[Stand, Path]) -> None:
    process, pid_file = stand
    saves = BrokerSaves(pid_file)
    assert saves.save_now()
    assert process.signals(1) == 1
    assert saves.save_now()
    assert process.signals(2) == 2
    saves.close()


def test_a_process_not_started_with_that_configuration_is_never_signalled(
    stand: tuple[Stand, Path], tmp_path: Path
) -> None:
    process, pid_file = stand
    # A stale pid file whose pid another process has taken over: its command line names
    # another configuration file.
    write_pid_file(pid_file, process.proc.pid, tmp_path / "other.conf")
    assert not BrokerSaves(pid_file).save_now()
    assert not BrokerSaves(tmp_path / "missing.pid").save_now()


def test_a_relaunched_broker_is_found_again_under_its_new_pid(
    stand: tuple[Stand, Path], tmp_path: Path
) -> None:
    process, pid_file = stand
    saves = BrokerSaves(pid_file)
    assert saves.save_now()
    assert process.signals(1) == 1
    process.stop()
    assert not saves.save_now()  # gone, and the pid file still names it
    again = Stand(tmp_path / "mosquitto.conf")
    try:
        write_pid_file(pid_file, again.proc.pid, tmp_path / "mosquitto.conf")
        assert saves.save_now()
        assert again.signals(1) == 1
    finally:
        again.stop()
        saves.close()


class FakeSaves(BrokerSaves):
    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))
        self.at: list[float] = []

    def save_now(self) -> bool:
        self.at.append(time.monotonic())
        return True


def test_the_adapter_asks_at_once_then_at_most_once_per_delay() -> None:
    async def scenario() -> tuple[list[float], float]:
        saves = FakeSaves()
        soon = SaveSoon(saves, 0.05)
        started = time.monotonic()
        soon.request()  # at once
        for _ in range(20):  # about 100 ms of messages, one every 5 ms
            await asyncio.sleep(0.005)
            soon.request()
        took = time.monotonic() - started
        await asyncio.sleep(0.1)
        soon.close()
        return [t - started for t in saves.at], took

    at, took = asyncio.run(scenario())
    assert at[0] < 0.005
    # Then one per 50 ms at most while messages keep coming, and one for the last of them.
    assert 2 <= len(at) <= 2 + took / 0.05
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps)
    assert at[-1] < took + 0.06


class Role:
    def __init__(self) -> None:
        self.process: object | None = object()
        self.generation = 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_supervisor_asks_while_an_adapter_is_down_or_just_started() -> None:
    adapter, broker, clock = Role(), Role(), Clock()
    watch = SavesWhileAway(FakeSaves(), [adapter], broker, grace=15.0, clock=clock)
    assert watch.away()  # everything has just started
    clock.now += 16
    assert not watch.away()  # the adapter has been up for a while: its own requests cover it
    adapter.process = None  # died
    assert watch.away()
    clock.now += 30
    assert watch.away()  # still down
    adapter.process, adapter.generation = object(), 2  # restarted
    assert watch.away()
    clock.now += 14
    assert watch.away()  # connecting, subscribing
    clock.now += 2
    assert not watch.away()
    broker.generation = 2  # Mosquitto relaunched: the adapter reconnects
    assert watch.away()
    clock.now += 16
    assert not watch.away()


def test_the_supervisor_thread_signals_only_while_away(stand: tuple[Stand, Path]) -> None:
    process, pid_file = stand
    adapter = Role()
    adapter.process = None
    watch = SavesWhileAway(BrokerSaves(pid_file), [adapter], None, every=0.01)
    watch.start()
    try:
        assert process.signals(5) == 5  # every 10 ms
    finally:
        watch.stop()


def test_the_supervisors_connection_counts_publishes_among_other_packets() -> None:
    from services.platform.broker_saves import _next_packet

    publish = bytes([0x30, 0x83, 0x01]) + b"\x00\x01t" + b"x" * 128  # remaining length 131
    assert _next_packet(publish) == (3, 134)
    assert _next_packet(publish[:100]) is None  # incomplete: wait for the rest
    assert _next_packet(b"\xd0\x00") == (13, 2)  # PINGRESP
    assert _next_packet(b"\x30") is None
    with pytest.raises(ValueError, match="malformed"):
        _next_packet(b"\x30\xff\xff\xff\xff\x01")
