"""Process-level tuning shared by every role: the garbage collector's pauses, CPU priority.

CPython's cycle collector stops the event loop while it runs. A full (generation 2) collection
traverses every tracked object, and a started API or worker holds some 150,000 of them from its
imports alone (FastAPI, pydantic, Faust, aiokafka...). Measured on the 2-core reference box
under 500 callbacks/s: a full collection every 2-5 s, each 90-110 ms, which was the whole p99
of the Sigfox downlink answer (135 ms; 16 ms once frozen, see ``docs/benchmarks.md``).

:func:`settle_heap` is called once a role has started: it collects what start-up left and
freezes the rest (``gc.freeze()``), so later collections only traverse objects created while
serving (a few thousand), and take ~3 ms. The frozen objects are never collected; they are the
modules, classes and singletons that live as long as the process anyway.

:func:`observe_gc` exports each collection's pause as ``hivepipe_gc_pause_seconds``.

:func:`lower_priority` and :func:`niced` give the roles that work in batches (the Faust worker,
the embedded Kafka broker) a lower CPU priority (``HIVEPIPE_BACKGROUND_NICE``), so that on a
saturated box the API and PostgreSQL, which answer requests while a client waits, run first.
The batch roles lose little: their own latency is a batch interval and a fetch wait.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from typing import Any

from prometheus_client import Histogram

GC_PAUSE = Histogram(
    "hivepipe_gc_pause_seconds",
    "Time the cycle collector stopped the process, per collection",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)

_started: list[float] = []


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _started.pop())


def observe_gc() -> None:
    """Record every collection's pause in ``hivepipe_gc_pause_seconds`` (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def settle_heap() -> int:
    """Collect, then freeze everything alive (see the module); returns the frozen count.

    Call it once the process has imported and built what it keeps for its lifetime; calling it
    again freezes what was added since (harmless)."""
    observe_gc()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def lower_priority(niceness: int) -> None:
    """Add ``niceness`` to this process's nice value (before it starts threads: they inherit
    it). Nothing happens where that is not allowed."""
    if niceness > 0:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(niceness)


def niced(command: list[str], niceness: int) -> list[str]:
    """``command`` run under ``nice -n niceness`` (unchanged when 0 or without ``nice``)."""
    nice = shutil.which("nice") if niceness > 0 else None
    return [nice, "-n", str(niceness), *command] if nice else command
