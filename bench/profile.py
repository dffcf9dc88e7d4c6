"""Profile the pipeline under a steady Sigfox load: CPU per callback per process, and py-spy's
sampled stacks of the API and the worker, summarised by where the time goes. With ``--mqtt``,
MQTT messages instead, through the adapter as its own process (roles ``worker`` and
``mqtt adapter``).

Usage: ``uv run python -m bench.profile [--rate 500] [--callbacks 10000] [--out DIR] [--mqtt]``.
Writes ``DIR/<role>.folded`` (collapsed stacks, for flamegraph tools or speedscope) and prints,
per role, the functions with the most inclusive and self time. py-spy needs permission to
attach (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.callbacks import Figures, drive_callbacks
from bench.cpu import describe, measured
from bench.env import running_pipeline
from bench.mqtt import bench_mqtt, steady_mqtt

LINE = re.compile(r":\d+\)$")


def summarise(folded: Path, top: int = 25) -> str:
    """Inclusive and self sample counts per frame (``function (file)``) of a folded profile."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [LINE.sub(")", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines.append("self:")
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


@contextlib.contextmanager
def spying(
    spy: str, pids: dict[str, int], roles: list[str], duration: int, out: Path
) -> Iterator[None]:
    """py-spy records each of ``roles`` for ``duration`` seconds while the block runs."""
    spies = [
        subprocess.Popen(  # noqa: S603
            [
                spy,
                "record",
                "--pid",
                str(pids[role]),
                "--format",
                "raw",
                "--rate",
                "250",
                "--gil",
                "--duration",
                str(duration),
                "--nonblocking",
                "--output",
                str(out / f"{role.replace(' ', '-')}.folded"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role in roles
    ]
    try:
        yield
    finally:
        for proc in spies:
            proc.wait()


def print_profiles(roles: list[str], out: Path) -> None:
    for role in roles:
        path = out / f"{role.replace(' ', '-')}.folded"
        print(f"\n== {role} ==")
        print(summarise(path) if path.exists() else "no profile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0, help="0: a flood")
    parser.add_argument("--callbacks", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/hivepipe-profile"))
    parser.add_argument(
        "--roles", help='default "api,worker" ("worker,mqtt adapter" with --mqtt); "": CPU only'
    )
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument(
        "--mqtt", action="store_true", help="MQTT messages (roles: worker, mqtt adapter)"
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="a flood of this many uplinks first (of the same kind)",
    )
    args = parser.parse_args()
    if args.roles is None:
        args.roles = "worker,mqtt adapter" if args.mqtt else "api,worker"
    roles = [role for role in args.roles.split(",") if role]
    args.out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    figures = Figures()
    with running_pipeline(api_processes=args.api_processes) as run:
        if args.prefill and args.mqtt:
            asyncio.run(bench_mqtt(run, args.prefill))
        elif args.prefill:
            asyncio.run(
                drive_callbacks(run, args.prefill, figures=figures, rate=0, seq_base=100_000)
            )
        duration = int(args.callbacks / (args.rate or 1000)) + 2
        if args.mqtt:
            with steady_mqtt(run, args.rate or 500.0) as (pids, publish):
                with spying(spy, pids, roles, duration, args.out):
                    cpu = measured(
                        pids, args.callbacks, lambda: publish(args.callbacks, 1_900_000_000)
                    )
            print(f"CPU per MQTT message at {args.rate:.0f}/s: {describe(cpu)}")
            print_profiles(roles, args.out)
            return
        # A first run warms up (topics, pools, prepared statements), then the measured one.
        asyncio.run(
            drive_callbacks(run, 2_000, figures=figures, rate=args.rate, register=not args.prefill)
        )
        pids = run.pids()
        result: dict[str, float] = {}

        def work() -> None:
            result.update(
                asyncio.run(
                    drive_callbacks(
                        run,
                        args.callbacks,
                        figures=figures,
                        rate=args.rate,
                        seq_base=1000,
                        register=False,
                    )
                )
            )

        with spying(spy, pids, roles, duration, args.out):
            cpu = measured(pids, args.callbacks, work)
    print(f"CPU per callback at {args.rate:.0f}/s: {describe(cpu)}")
    print(f"callback → stored p50 / p99: {result['p50']:.0f} / {result['p99']:.0f} ms")
    print(
        f"callbacks accepted {result['accept_rate']:,.0f}/s, points stored"
        f" {result['points_rate']:,.0f}/s, answer p50 / p99 {result['answer_p50']:.0f}"
        f" / {result['answer_p99']:.0f} ms"
    )
    print_profiles(roles, args.out)


if __name__ == "__main__":
    main()
