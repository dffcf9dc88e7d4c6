"""The benchmark's own tools: CPU per uplink from /proc, and docs/benchmarks.md keeping the
dated sections of earlier runs."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.__main__ import dated_sections
from bench.cpu import per_uplink_ms, tree_cpu


def test_cpu_of_a_process_includes_its_children() -> None:
    before = tree_cpu(os.getpid())
    child = subprocess.Popen(  # a child that burns CPU until stopped
        [sys.executable, "-c", "while True: pass"]
    )
    try:
        for _ in range(200):
            if tree_cpu(os.getpid()) - before > 0.2:
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert tree_cpu(os.getpid()) - before > 0.2
    finally:
        child.kill()
        child.wait()


def test_per_uplink_figures_and_their_total() -> None:
    figures = per_uplink_ms({"api": 1.0, "worker": 2.0}, {"api": 1.5, "worker": 3.0}, 1000)
    assert figures == {"api": 0.5, "worker": 1.0, "total": 1.5}


def test_dated_sections_are_kept_and_the_generated_ones_are_not() -> None:
    doc = "\n".join(
        [
            "# Benchmarks",
            "| a | b |",
            "## 2026-12-06: one change",
            "kept 1",
            "## Scale-out (2026-12-06)",
            "kept 2",
            "## Reading the figures",
            "dropped",
        ]
    )
    assert dated_sections(doc) == [
        "## 2026-12-06: one change",
        "kept 1",
        "## Scale-out (2026-12-06)",
        "kept 2",
        "",
    ]
