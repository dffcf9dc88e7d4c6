"""CPU time per uplink, per process of the pipeline, from ``/proc`` (the load generator excluded).

A process's figure is its own CPU time plus its descendants' (PostgreSQL's backends are children
of its postmaster), sampled before and after a steady load, divided by the uplinks sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
#: The load generator's own CPU per uplink (this process: the HTTP or MQTT client and the
#: subscriber that watches ``readings``), reported beside the pipeline's, never in its total.
LOAD = "_load"


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system seconds) of one process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and every living descendant."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents[int(entry)], seconds[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += seconds.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


def snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: tree_cpu(pid) for name, pid in pids.items()}


def per_uplink_ms(
    before: Mapping[str, float], after: Mapping[str, float], uplinks: int
) -> dict[str, float]:
    """Milliseconds of CPU per uplink by process, and their ``total``."""
    figures = {name: (after[name] - before[name]) * 1000 / uplinks for name in before}
    figures["total"] = sum(figures.values())
    return figures


def by_process(figures: Mapping[str, float]) -> dict[str, float]:
    """The pipeline's processes' figures alone: without ``total`` and the load generator's."""
    return {k: v for k, v in figures.items() if k != "total" and not k.startswith("_")}


def describe(figures: Mapping[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in by_process(figures).items())
    load = f"; load generator {figures[LOAD]:.2f}, not counted" if LOAD in figures else ""
    return f"{figures['total']:.2f} ms ({parts}{load})"


def measured(pids: Mapping[str, int], uplinks: int, work: Callable[[], object]) -> dict[str, float]:
    """Run ``work`` (which sends ``uplinks`` uplinks and waits until they are stored)."""
    before, own = snapshot(pids), sum(os.times()[:2])
    work()
    figures = per_uplink_ms(before, snapshot(pids), uplinks)
    figures[LOAD] = (sum(os.times()[:2]) - own) * 1000 / uplinks
    return figures
