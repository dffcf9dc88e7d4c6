"""The chart of ``make bench`` (``docs/benchmarks.png``): points stored per second against the
raw INSERT baseline, and CPU per uplink by process, with the Node-RED flow measured in the same
run (when it ran), the one measured on this kind of machine another day and the targets of
issue #16 drawn beside them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cpu import by_process

if TYPE_CHECKING:
    from bench.nodered import NodeRedFigures

#: The Node-RED flow of issue #16 on this machine kind (HTTP-in, decode, batched INSERT).
NODE_RED_POINTS = (7_894, 8_605)
NODE_RED_CPU_MS = 0.96
TARGET_POINTS = 12_000
TARGET_CPU_MS = 1.0


def write_chart(
    path: Path,
    *,
    stored: Mapping[str, float],
    insert_rate: float,
    cpu: Mapping[str, float] | None,
    flood_cpu: Mapping[str, float] | None = None,
    nodered: NodeRedFigures | None = None,
) -> None:
    """``stored``: points stored/s by section; ``cpu``: ms per callback by process at 500/s,
    ``flood_cpu`` the same during the flood; ``nodered``: the Node-RED flow in this run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["raw INSERT\n(baseline)", *stored]
    values = [insert_rate, *stored.values()]
    colours = ["#9e9e9e"] + ["#1f77b4"] * len(stored)
    if nodered:
        names += ["Node-RED,\nat once", "Node-RED,\nafter commit"]
        values += [nodered.at_once["points_rate"], nodered.after_commit["points_rate"]]
        colours += ["#ff7f0e"] * 2
    left.bar(names, values, color=colours)
    left.axhspan(
        *NODE_RED_POINTS, color="#ff7f0e", alpha=0.25, label="Node-RED flow (Sigfox, another day)"
    )
    left.axhline(TARGET_POINTS, color="#d62728", linestyle="--", label="target (Sigfox)")
    left.set_ylabel("points stored / s")
    left.set_title("Throughput")
    left.legend(fontsize=8)
    for x, v in enumerate(values):
        left.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)

    if cpu:
        colours_by_process: dict[str, str] = {}
        runs = [("hivepipe, 500/s", cpu), ("hivepipe, flood", flood_cpu or {})]
        if nodered:
            runs.append(("Node-RED flow,\n500/s", nodered.cpu))
        for label, figures in runs:
            bottom = 0.0
            for process, ms in by_process(figures).items():
                known = process in colours_by_process
                colour = colours_by_process.setdefault(process, f"C{len(colours_by_process)}")
                right.bar(
                    [label], [ms], bottom=bottom, color=colour, label=None if known else process
                )
                bottom += ms
        right.bar(["Node-RED flow,\nanother day"], [NODE_RED_CPU_MS], color="#7f7f7f", hatch="//")
        right.axhline(TARGET_CPU_MS, color="#d62728", linestyle="--", label="target")
        right.set_ylabel("CPU ms per Sigfox callback")
        right.set_title("CPU per uplink, all processes")
        right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
