"""Scale-out: the Sigfox flood's points stored per second with 1 and then 2 workers, then with
2 API processes, and the pause in storing while a worker joins the consumer group and while
one leaves it.

Runs on a pipeline of its own (embedded servers, one API process, one worker, 4 partitions),
then the flood once more on a second one with 2 API processes on one listening socket, as
``hivepipe up`` runs the API by default (``HIVEPIPE_API_PROCESSES``), and its CPU per callback.
The second worker is a ``hivepipe worker`` with its own name in the group (static membership,
as ``hivepipe up`` names its workers); the third, which joins and leaves under a steady load,
is a dynamic member (a bare ``hivepipe worker``), so its leaving is a LeaveGroup, not a
session expiry. The pause is the longest time without a stored uplink (the ``readings`` topic,
read as it is written) from the event until 30 s after it.

``uv run python -m bench.scale_out`` runs it alone and prints the figures (``make bench``
runs it as the ``scale_out`` section).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.callbacks import Figures, drive_callbacks
from bench.cpu import describe, measured
from bench.env import Running, running_pipeline
from services.entrypoints.roles import spawn_role, stop_process
from services.platform.events import TOPIC_READINGS


def _worker_env(run: Running, instance: str) -> dict[str, str]:
    env = run.install.child_env()
    env |= {"HIVEPIPE_LOG_LEVEL": "warning", "HIVEPIPE_WORKER_INSTANCE": instance}
    return env


def add_worker(run: Running, instance: str = "") -> subprocess.Popen[bytes]:
    """One more ``hivepipe worker`` on the pipeline's servers (``instance`` empty: dynamic)."""
    return spawn_role("worker", _worker_env(run, instance))


async def wait_joined(run: Running, proc: subprocess.Popen[bytes], within: float = 90) -> float:
    from stream import ready_file

    started = time.monotonic()
    ready = ready_file(run.settings, proc.pid)
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() - started > within:
            raise RuntimeError("the added worker did not join its group")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


class StoredWatch:
    """Arrival times of the ``readings`` messages, read as they are written."""

    def __init__(self, run: Running) -> None:
        self.run = run
        self.arrivals: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StoredWatch:
        s = self.run.settings
        self.consumer = AIOKafkaConsumer(
            s.topic(TOPIC_READINGS),
            bootstrap_servers=s.kafka,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.monotonic()
            self.arrivals.extend(now for records in batches.values() for _ in records)

    async def __aexit__(self, *_: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without a stored uplink between ``start`` and ``end``."""
        inside = [start, *(t for t in self.arrivals if start <= t <= end)]
        last = max(inside)
        gaps = [b - a for a, b in zip(inside, inside[1:], strict=False)]
        return max([*gaps, 0.0]) if last >= end - 1.0 else end - inside[0]


async def churn(run: Running, rate: float, seq_base: int) -> dict[str, float]:
    """A steady load; a third worker joins 8 s in, leaves 8 s after it has joined; the pauses."""
    n = int(rate * 80)
    async with StoredWatch(run) as watch:
        load = asyncio.create_task(
            drive_callbacks(run, n, figures=Figures(), rate=rate, seq_base=seq_base, register=False)
        )
        await asyncio.sleep(8.0)
        joining = time.monotonic()
        third = add_worker(run)
        joined = await wait_joined(run, third)
        await asyncio.sleep(8.0)
        leaving = time.monotonic()
        third.send_signal(signal.SIGTERM)
        await asyncio.to_thread(third.wait, 60)
        await asyncio.sleep(30.0)
        ended = time.monotonic()
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
    return {
        "join_took": joined,
        "join_pause": watch.longest_gap(joining, leaving),
        "leave_pause": watch.longest_gap(leaving, ended),
        "steady_gap": watch.longest_gap(joining - 7.0, joining),
    }


def warm(run: Running) -> None:
    """The devices registered and the pipeline warm (not measured), as before the main flood."""
    asyncio.run(drive_callbacks(run, 1_000, figures=Figures(), rate=500.0, seq_base=10_000))


def bench_scale_out(callbacks: int) -> dict[str, Any]:
    """The figures of this section (see the module's docstring)."""
    with running_pipeline(partitions=4) as run:
        warm(run)
        one = asyncio.run(drive_callbacks(run, callbacks, figures=Figures(), register=False))
        second = add_worker(run, "bench-worker-2")
        try:
            asyncio.run(wait_joined(run, second))
            time.sleep(12.0)  # the first worker's rebalance, which tansu completes later
            two = asyncio.run(
                drive_callbacks(
                    run,
                    callbacks,
                    figures=Figures(),
                    seq_base=callbacks // 1000 + 1,
                    register=False,
                )
            )
            pauses = asyncio.run(churn(run, 200.0, 2 * (callbacks // 1000) + 2))
        finally:
            stop_process(second)
    with running_pipeline(partitions=4, api_processes=2) as run:
        warm(run)
        apis: dict[str, float] = {}

        def flood() -> None:
            apis.update(
                asyncio.run(drive_callbacks(run, callbacks, figures=Figures(), register=False))
            )

        cpu = measured(run.pids(), callbacks, flood)
    return {
        "one_points": one["points_rate"],
        "one_accepted": one["accept_rate"],
        "two_points": two["points_rate"],
        "two_accepted": two["accept_rate"],
        "apis_points": apis["points_rate"],
        "apis_accepted": apis["accept_rate"],
        "apis_cpu": cpu,
        **pauses,
    }


def add_figures(result: dict[str, Any], figures: Figures, callbacks: int) -> None:
    figures.add(
        f"Sigfox flood ({callbacks:,} callbacks, 4 points each): points stored, 1 worker",
        f"{result['one_points']:,.0f} /s",
        f"callbacks accepted {result['one_accepted']:,.0f}/s",
    )
    figures.add(
        "the same flood, 2 workers",
        f"{result['two_points']:,.0f} /s",
        f"{result['two_points'] / result['one_points']:.2f} × 1 worker; "
        f"callbacks accepted {result['two_accepted']:,.0f}/s",
    )
    figures.add(
        "the same flood, 2 API processes (as `hivepipe up` runs them), 1 worker",
        f"{result['apis_points']:,.0f} /s",
        f"{result['apis_points'] / result['one_points']:.2f} × 1 API process; "
        f"callbacks accepted {result['apis_accepted']:,.0f}/s; "
        f"CPU per callback {describe(result['apis_cpu'])}",
    )
    figures.add(
        "a worker joins under 200 callbacks/s: longest time without a stored uplink",
        f"{result['join_pause']:.1f} s",
        f"its process ready in {result['join_took']:.1f} s; before it: "
        f"{result['steady_gap']:.1f} s",
    )
    figures.add(
        "a worker leaves (SIGTERM, LeaveGroup): longest time without a stored uplink",
        f"{result['leave_pause']:.1f} s",
        "the embedded broker; a real Kafka: docs/operations.md",
    )


def main() -> None:
    import argparse

    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callbacks", type=int, default=20_000)
    args = parser.parse_args()
    figures = Figures()
    add_figures(bench_scale_out(args.callbacks), figures, args.callbacks)
    table = Table(title="hivepipe bench: scale-out")
    for column in ("measure", "figure", "ratio / target"):
        table.add_column(column)
    for row in figures.rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
