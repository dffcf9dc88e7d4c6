"""Run the benchmarks and write docs/benchmarks.md.

Usage: ``make bench`` or ``uv run python -m bench [--callbacks N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.callbacks import Figures, baseline_insert, baseline_kafka, drive_callbacks
from bench.env import machine, running_pipeline

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callbacks", type=int, default=20_000)
    args = parser.parse_args()
    console = Console()
    figures = Figures()
    with running_pipeline() as run:
        console.print(f"pipeline up: {run.base_url}, Kafka {run.settings.kafka}")
        result = asyncio.run(drive_callbacks(run, args.callbacks, figures=figures))
        kafka_rate = asyncio.run(baseline_kafka(run, args.callbacks))
        insert_rate = asyncio.run(baseline_insert(run, args.callbacks * 4))
    figures.add(
        "Sigfox callbacks accepted (4 points each)",
        f"{result['accept_rate']:,.0f} /s",
        f"{result['accept_rate'] / kafka_rate:.1%} of raw Kafka produce+consume",
    )
    figures.add(
        "data points stored end to end",
        f"{result['points_rate']:,.0f} /s",
        f"{result['points_rate'] / insert_rate:.1%} of raw multi-row insert",
    )
    figures.add("latency callback → stored, p50", f"{result['p50']:.0f} ms", "")
    figures.add("latency callback → stored, p99", f"{result['p99']:.0f} ms", "")
    figures.add("baseline: raw aiokafka produce+consume", f"{kafka_rate:,.0f} msg/s", "1.0")
    figures.add("baseline: raw multi-row INSERT (1,000 rows)", f"{insert_rate:,.0f} rows/s", "1.0")
    table = Table(title=f"hivepipe bench — {args.callbacks:,} callbacks")
    for column in ("measure", "figure", "ratio to baseline"):
        table.add_column(column)
    for row in figures.rows:
        table.add_row(*row)
    console.print(table)
    write_doc(figures, args.callbacks, result)


def write_doc(figures: Figures, n: int, result: dict[str, float]) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`uv run python -m bench`). Every figure is measured in the same",
        "run as its baseline, on the same embedded servers (tansu, embedded PostgreSQL), with the",
        "API and the Faust worker as separate processes, as `hivepipe up` runs them; the load",
        "generator shares the machine with them.",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- load: {n:,} Sigfox callbacks (4 points each, 1,000 devices, 64 concurrent requests);"
        f" {result['accepted']:,.0f} accepted, {result['stored_points']:,.0f} points stored",
        "",
        "| measure | figure | ratio to baseline |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in figures.rows),
        "",
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
