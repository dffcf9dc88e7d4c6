"""Run the benchmarks and write docs/benchmarks.md.

Usage: ``make bench`` or ``uv run python -m bench [--callbacks N] [--points N] [--only a,b]``.
Sections: callbacks, journal, mqtt, orbit, webhooks, queries, auth, broker, scale_out,
codecs. Each figure is reported with the baseline measured in the same run on the same servers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.callbacks import (
    Figures,
    baseline_insert,
    baseline_kafka,
    device_ids,
    drive_callbacks,
)
from bench.chart import write_chart
from bench.cpu import describe, measured
from bench.env import Running, machine, running_pipeline
from bench.nodered import NodeRedFigures, NodeRedUnavailable, measure_nodered

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
CHART = DOC.with_suffix(".png")
SECTIONS = (
    "callbacks",
    "journal",
    "mqtt",
    "orbit",
    "webhooks",
    "queries",
    "auth",
    "broker",
    "scale_out",
    "codecs",
)


def nodered_baseline(run: Running, args: argparse.Namespace) -> NodeRedFigures | str:
    """The issue's Node-RED flow on the pipeline's PostgreSQL, while hivepipe is idle (stopped
    before hivepipe's own flood), driven as hivepipe is; why not, when it could not run."""
    try:
        return measure_nodered(
            run.settings.database_url or "",
            run.pids()["postgres"],
            run.settings.token or "bench",  # its own check, whatever hivepipe's is
            device_ids(1000),
            args.callbacks,
            steady_seq_base=args.callbacks // 1000 + 20,
        )
    except NodeRedUnavailable as exc:
        return f"skipped: {exc}"
    except Exception as exc:  # a baseline that fails must not take hivepipe's figures with it
        Console().print_exception()
        return f"failed: {exc!r}"[:120]


def add_nodered_figures(nodered: NodeRedFigures | str, figures: Figures) -> None:
    flow = "Node-RED flow (HTTP-in, decode function, join 250/100 ms, multi-row INSERT)"
    if isinstance(nodered, str):
        figures.add(f"baseline: {flow}", nodered, "")
        return
    issue = "the issue's, another day"
    for answered, result, then in (
        ("at once", nodered.at_once, "7,894–8,605"),
        ("only after its INSERT commits", nodered.after_commit, "5,774–5,940"),
    ):
        complete = result["rows"] >= result["expected_rows"]
        rows = (
            "" if complete else f"; only {result['rows']:,.0f} of {result['expected_rows']:,} rows"
        )
        figures.add(
            f"baseline: {flow}, answering {answered}: points stored/s",
            f"{result['points_rate']:,.0f} /s",
            f"1 ({issue}: {then}){rows}",
        )
    figures.add(
        "Node-RED CPU per callback at a steady 500/s (node + postgres)",
        describe(nodered.cpu),
        f"{issue}: 0.96 ms",
    )


def versus_nodered(hivepipe: float, nodered: float | None) -> str:
    """A ratio column's "N × Node-RED in this run" (nothing when the flow did not run)."""
    return f"; {hivepipe / nodered:.2f} × Node-RED in this run" if nodered else ""


def section_callbacks(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    # The issue's Node-RED flow first, on the same PostgreSQL while hivepipe is idle.
    nodered = nodered_baseline(run, args)
    args.nodered = nodered if isinstance(nodered, NodeRedFigures) else None
    # The devices registered and the pipeline warm (not measured), then the flood, with the
    # CPU it cost every process.
    asyncio.run(drive_callbacks(run, 1_000, figures=figures, rate=500.0, seq_base=10_000))
    result: dict[str, float] = {}

    def flood() -> None:
        result.update(
            asyncio.run(drive_callbacks(run, args.callbacks, figures=figures, register=False))
        )

    flood_cpu = measured(run.pids(), args.callbacks, flood)
    # The flood's latency is mostly the age of its backlog; at a steady rate it is the path's.
    steady_rate, steady_n = 500.0, 5_000
    steady = asyncio.run(
        drive_callbacks(
            run,
            steady_n,
            figures=figures,
            rate=steady_rate,
            seq_base=args.callbacks // 1000 + 1,
        )
    )
    # CPU per callback, per process, at the same steady rate (devices already registered).
    cpu = steady_cpu(run, 5_000, args.callbacks // 1000 + 20, figures)
    args.cpu = cpu
    args.flood_cpu = flood_cpu
    kafka_rate = asyncio.run(baseline_kafka(run, args.callbacks))
    insert_rate = asyncio.run(baseline_insert(run, args.callbacks * 4))
    figures.add(
        "baseline: raw aiokafka produce+consume (acks=all)", f"{kafka_rate:,.0f} msg/s", "1"
    )
    figures.add(
        "baseline: raw multi-row INSERT, 1,000 rows each, logged table shaped like points",
        f"{insert_rate:,.0f} rows/s",
        "1",
    )
    add_nodered_figures(nodered, figures)
    nodered_rate = args.nodered.at_once["points_rate"] if args.nodered else None
    nodered_cpu = args.nodered.cpu["total"] if args.nodered else None
    figures.add(
        f"Sigfox callbacks accepted ({args.callbacks:,}, 4 points each, 64 concurrent)",
        f"{result['accept_rate']:,.0f} /s",
        f"{result['accept_rate'] / kafka_rate:.2f} × raw Kafka",
    )
    figures.add(
        "data points stored end to end (callback → PostgreSQL)",
        f"{result['points_rate']:,.0f} /s",
        f"{result['points_rate'] / insert_rate:.2f} × raw INSERT; target ≥ 12,000/s"
        " (Node-RED flow here: 7,894–8,605)" + versus_nodered(result["points_rate"], nodered_rate),
    )
    figures.add(
        "CPU per Sigfox callback during the flood, every process (load generator excluded)",
        describe(flood_cpu),
        "batched: claims, Kafka requests and fetches, stores",
    )
    figures.add(
        f"CPU per Sigfox callback at a steady {steady_rate:,.0f}/s, every process"
        " (load generator excluded)",
        describe(cpu),
        "target ≤ 1.0 ms (Node-RED flow here: 0.96)" + versus_nodered(cpu["total"], nodered_cpu),
    )
    figures.add(
        "latency callback → stored during the flood, p50 / p99",
        f"{result['p50']:.0f} / {result['p99']:.0f} ms",
        "mostly the backlog's age when the API accepts faster than the worker stores",
    )
    figures.add(
        f"latency callback → stored at a steady {steady_rate:,.0f} callbacks/s, p50 / p99",
        f"{steady['p50']:.0f} / {steady['p99']:.0f} ms",
        f"{steady['stored_points']:,.0f} of {steady_n * 4:,} points stored; target p99 < 150 ms",
    )
    args.kafka_rate = kafka_rate
    args.insert_rate = insert_rate
    args.stored["Sigfox flood"] = result["points_rate"]
    args.flood = result


def section_journal(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    """What the intake journal costs: the callbacks' flood again, on a second pipeline with
    ``HIVEPIPE_INTAKE_JOURNAL=false`` (a replicated Kafka cluster's setting)."""
    on = args.flood or asyncio.run(drive_callbacks(run, args.callbacks, figures=figures))
    with running_pipeline(intake_journal="false") as without:
        off = asyncio.run(drive_callbacks(without, args.callbacks, figures=figures))
    figures.add(
        "the same flood, intake journal off: callbacks accepted / points stored",
        f"{off['accept_rate']:,.0f} / {off['points_rate']:,.0f} /s",
        f"journal on: {on['accept_rate'] / off['accept_rate']:.2f} × accepted, "
        f"{on['points_rate'] / off['points_rate']:.2f} × stored",
    )


def steady_cpu(run: Running, n: int, seq_base: int, figures: Figures) -> dict[str, float]:
    """CPU per callback by process at 500 callbacks/s (devices already registered)."""
    return measured(
        run.pids(),
        n,
        lambda: asyncio.run(
            drive_callbacks(run, n, figures=figures, rate=500.0, seq_base=seq_base, register=False)
        ),
    )


def section_broker(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    """Does the embedded broker's cost per message grow with what it holds? The same steady
    load on a fresh pipeline of its own (a fresh tansu), again after a flood through the
    pipeline's own topics, and again after a million more messages (uplink-sized, on a topic
    nobody reads)."""
    from bench.callbacks import fill_topic

    with running_pipeline() as fresh:
        asyncio.run(drive_callbacks(fresh, 2_000, figures=figures, rate=500.0))  # registers
        before = steady_cpu(fresh, 5_000, 10, figures)
        asyncio.run(
            drive_callbacks(fresh, args.callbacks, figures=figures, seq_base=20, register=False)
        )
        through = steady_cpu(fresh, 5_000, 20 + args.callbacks // 1000 + 10, figures)
        fill_rate = asyncio.run(fill_topic(fresh, args.fill))
        after = steady_cpu(fresh, 5_000, 20 + args.callbacks // 1000 + 20, figures)
    figures.add(
        f"CPU per callback at 500/s on a fresh embedded broker → after {args.callbacks:,}"
        f" callbacks through the pipeline → after {args.fill:,} more messages on a topic"
        " nobody reads",
        f"{describe(before)} → {describe(through)} → {describe(after)}",
        f"tansu {through['tansu'] / before['tansu']:.2f} ×, then"
        f" {after['tansu'] / before['tansu']:.2f} × (filled at {fill_rate:,.0f} msg/s)",
    )


def section_mqtt(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    from bench.mqtt import bench_mqtt, mqtt_cpu

    result = asyncio.run(bench_mqtt(run, args.mqtt))
    args.stored["MQTT flood"] = result["stored_rate"]
    ratio = f"{result['rate'] / args.kafka_rate:.2f} × raw Kafka" if args.kafka_rate else ""
    figures.add(
        f"MQTT messages accepted ({args.mqtt:,}, QoS 1, acked after Kafka)",
        f"{result['rate']:,.0f} /s",
        ratio,
    )
    figures.add(
        "MQTT points stored end to end (publish → PostgreSQL)",
        f"{result['stored_rate']:,.0f} /s",
        f"{result['stored']:,.0f} of {args.mqtt:,} stored",
    )
    cpu = mqtt_cpu(run)
    figures.add(
        "CPU per MQTT message at a steady 500/s, every process (publisher excluded)",
        describe(cpu),
        "target ≤ 0.6 ms (Node-RED flow here: 0.40–0.60)",
    )


def section_orbit(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    from bench.orbit import bench_downlink_latency

    result: dict[str, Any] = asyncio.run(bench_downlink_latency(run))
    figures.add(
        "Sigfox downlink answer p50 / p99 (under ~500 callbacks/s)",
        f"{result['p50_ms']:.1f} / {result['p99_ms']:.1f} ms",
        f"load completed {result['load_completed_per_s']:,.0f}/s, CPUs"
        f" {result['machine_busy']:.0%} busy; target p99 < 20 ms"
        f" ({'met' if result['p99_ms'] < 20 else 'not met'})",
    )


def section_webhooks(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    from bench.webhooks import bench_webhooks

    result = asyncio.run(bench_webhooks(run))
    baseline = result.get("baseline_rate") or float("nan")
    figures.add("baseline: raw aiohttp POSTs to the same receiver", f"{baseline:,.0f} /s", "1")
    figures.add(
        "webhook deliveries (signed, one POST per point)",
        f"{result['rate']:,.0f} /s",
        f"{result['rate'] / baseline:.2f} × raw POSTs",
    )
    figures.add(
        f"stored → delivered p50 / p99 at {result['latency_achieved_rate']:,.0f}/s",
        f"{result['p50_ms']:.0f} / {result['p99_ms']:.0f} ms",
        "target p99 < 200 ms",
    )


def section_queries(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    from bench.queries import bench_queries

    result = bench_queries(run, args.points)
    figures.add(
        f"generated {args.points:,} points (INSERT … SELECT)",
        f"{result['generate_rate']:,.0f} rows/s",
        "",
    )
    figures.add(
        "24-hour page of one device, p50 / p99 (HTTP, auth)",
        f"{result['page_p50']:.1f} / {result['page_p99']:.1f} ms",
        "target p99 < 50 ms",
    )
    figures.add(
        "30-day hourly aggregate of one device, p50 / p99",
        f"{result['agg_p50']:.1f} / {result['agg_p99']:.1f} ms",
        "target p99 < 50 ms",
    )


def section_auth(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    from tests.api_support import bench_auth_overhead

    result = asyncio.run(bench_auth_overhead(run.settings.database_url))
    figures.add(
        "authentication + rate limiting, added p50 (HTTP)",
        f"{result['http_overhead_p50_us'] / 1000:.2f} ms",
        "target < 1 ms",
    )


def section_scale_out(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    """1 vs 2 workers, 1 vs 2 API processes and the rebalance pauses, on pipelines of their own
    (bench/scale_out.py)."""
    from bench.scale_out import add_figures, bench_scale_out

    add_figures(bench_scale_out(args.callbacks), figures, args.callbacks)


def section_codecs(run: Running, args: argparse.Namespace, figures: Figures) -> None:
    from bench.codecs import section_codecs as codecs

    codecs(run, args.codec_uplinks, figures)


RUNNERS: dict[str, Callable[[Running, argparse.Namespace, Figures], None]] = {
    "callbacks": section_callbacks,
    "journal": section_journal,
    "mqtt": section_mqtt,
    "orbit": section_orbit,
    "webhooks": section_webhooks,
    "queries": section_queries,
    "auth": section_auth,
    "broker": section_broker,
    "scale_out": section_scale_out,
    "codecs": section_codecs,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callbacks", type=int, default=20_000)
    parser.add_argument("--mqtt", type=int, default=20_000)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--fill", type=int, default=1_000_000, help="messages for `broker`")
    parser.add_argument("--codec-uplinks", type=int, default=5_000, help="for `codecs`")
    parser.add_argument("--only", default=",".join(SECTIONS))
    args = parser.parse_args()
    args.kafka_rate = args.insert_rate = 0.0
    args.cpu = args.flood_cpu = None
    args.stored = {}
    args.flood = None
    args.nodered = None
    wanted = [name for name in SECTIONS if name in args.only.split(",")]
    console = Console()
    figures = Figures()
    # The webhook section delivers to a receiver on 127.0.0.1 over plain http.
    with running_pipeline(webhook_allowed_cidrs="127.0.0.0/8", webhook_allow_http="true") as run:
        console.print(f"pipeline up: {run.base_url}, Kafka {run.settings.kafka}")
        for name in wanted:
            console.print(f"[bold]{name}[/bold] …")
            try:
                RUNNERS[name](run, args, figures)
            except Exception as exc:  # one failing section must not hide the others
                console.print_exception()
                figures.add(f"{name}: failed", repr(exc)[:80], "")
    table = Table(title="hivepipe bench")
    for column in ("measure", "figure", "ratio / target"):
        table.add_column(column)
    for row in figures.rows:
        table.add_row(*row)
    console.print(table)
    if args.insert_rate and args.stored:
        write_chart(
            CHART,
            stored=args.stored,
            insert_rate=args.insert_rate,
            cpu=args.cpu,
            flood_cpu=args.flood_cpu,
            nodered=args.nodered,
        )
    write_doc(figures, wanted)


NOTES = [
    "## Reading the figures",
    "",
    "- Everything shares two cores: the API, the Faust worker, tansu, PostgreSQL, Mosquitto",
    "  and the load generator. The raw baselines run alone; the pipeline figures pay for every",
    "  process at once, so the ratios are the honest cost of the whole path, not of one hop.",
    "- The figures depend on the machine as much as on the code: two machines of this kind",
    "  on 2026-12-01 differed by a factor of two (raw Kafka 37,670 and 77,277 msg/s, raw",
    "  INSERT 31,930 and 63,303 rows/s). Compare ratios, and runs on one machine.",
    "- The load generator (`bench/http_load.py`) writes prepared HTTP/1.1 requests on 64",
    "  keep-alive connections and reads the status line: about 0.1 ms of CPU per callback,",
    "  where aiohttp's client (used until 2026-12-06) took 0.15-0.2 ms, a fifth of the",
    "  two cores during a flood, taken from whichever system it drove.",
    "- The Node-RED baseline is the issue's flow (`bench/nodered/flows.json`: HTTP-in with",
    "  the token check, a function decoding the Orbit frame, a join of 250 callbacks or",
    "  100 ms, one multi-row `INSERT ... ON CONFLICT DO NOTHING` into a logged table keyed",
    "  and indexed as `points`), on the same PostgreSQL, driven by the same load generator",
    "  while hivepipe idles. Answering at once, a 204 promises nothing: what its join holds",
    "  (up to 250 callbacks) is lost with the process. Answering after its commit, each",
    "  callback waits out the join: 64 connections never fill 250, so every batch waits",
    "  100 ms. hivepipe answers once PostgreSQL (the intake journal) and Kafka have the",
    "  uplink. It needs Node.js and npm (`npm ci` in `bench/nodered`, run by the bench);",
    "  without them its rows say skipped.",
    "- CPU per uplink: per process from `/proc` (a process and its children: PostgreSQL's",
    "  backends), over a run of known size, the load generator excluded (its own CPU, the",
    "  HTTP or MQTT client and the subscriber that watches `readings`, is shown beside it:",
    "  it also tells this machine's speed at the time). It depends on the",
    "  load: in a flood, claims, Kafka requests, fetches and stores are shared by many",
    "  callbacks; at a steady 500/s most are a callback's own (`python -m bench.profile`",
    "  shows where). The API is stateless: add processes (`HIVEPIPE_API_PROCESSES`; their",
    "  rate limits are shared through PostgreSQL, or `HIVEPIPE_RATE_LIMIT_STORAGE=redis://`).",
    "- Callback → stored latency: the flood posts as fast as 64 connections allow, and the",
    "  API accepts faster than the worker (on the same cores) stores, so the flood's latency",
    "  is mostly the age of its backlog. At a steady 500 callbacks/s it is the path's own:",
    "  the producer's linger (`HIVEPIPE_CALLBACK_LINGER_MS`), one Kafka hop (tansu holds",
    "  each fetch for the worker's fetch wait, `HIVEPIPE_FETCH_MAX_WAIT_MS`, 150 ms, the",
    "  window a batch gathers in: `stream/transport.py`; Faust's fixed 1.5 s put ~1 s on",
    "  every hop), and the batch's transaction. A batch leaves once its",
    "  fetch's burst has ended (`HIVEPIPE_FLUSH_QUIET`, 5 ms; `stream/batching.py`), not on",
    "  Faust's fixed `take()` tick (`HIVEPIPE_FLUSH_INTERVAL`, 100 ms, now only the longest",
    "  a batch waits under a flood).",
    "- The Sigfox downlink answer: two PostgreSQL round trips in one transaction (pipeline",
    "  mode), a durable commit, no Kafka on its path (the uplink leaves through an outbox);",
    "  1.5 ms alone. Under load its p99 was made of other things, found in this order:",
    "  full garbage collections of the API's start-up heap (90-110 ms every 2-5 s; frozen",
    "  at start-up now, `services/platform/runtime.py`), unprepared statements, eight round trips",
    "  instead of two (psycopg's transaction blocks wait for the server in pipeline mode),",
    "  one Kafka request per uplink callback (`HIVEPIPE_CALLBACK_LINGER_MS` batches them),",
    "  and PostgreSQL's backends queueing for the CPU behind the worker and tansu",
    "  (`HIVEPIPE_BACKGROUND_NICE`). The load generator is niced too: it stands in for the",
    "  network servers, which are remote in production. `docs/orbit.md` has the steps.",
    "  What is left is the wait for a CPU, so the p99 follows the machine's headroom: on the",
    "  slower machine 500 callbacks/s kept the cores 75-90 % busy and the p99 was 30 to",
    "  56 ms (30.7 in `make bench`: not met); on the faster one, 30-40 % busy, 6.9 to",
    "  8.1 ms in four runs of the section alone, 11.4 and 13.3 ms at 1,000 and 1,500",
    "  callbacks/s, and the figure above in `make bench`.",
    "- tansu's CPU per message grows with what it holds: its memory store keeps one object",
    "  per partition per produce request, and each fetch that finds new records lists every",
    "  object of the partition. Sections that run late, on a tansu that already holds the",
    "  earlier floods, pay more for the broker than they would with Kafka. The embedded",
    "  broker gets one partition per worker (unless `HIVEPIPE_PARTITIONS` is set): a batch",
    "  keyed by device then makes one object, not one per partition. `python -m",
    "  bench.broker_objects` measures it alone: about 1.1 µs more per fetch that finds",
    "  records for each object the partition holds (2026-12-07). The pipeline makes some 50",
    "  a second under a steady load, so `hivepipe up` recycles tansu past",
    "  `HIVEPIPE_EMBEDDED_KAFKA_MAX_CPU` (docs/operations.md); this section's fills make",
    "  few objects and understate the growth.",
    "- Webhook deliveries are CPU-bound in the worker (the HTTP client, the socket sends,",
    "  the signature); the frozen start-up heap and prepared statements took a quarter off",
    "  their cost (4,783/s before them in a run on the same machine). More worker processes",
    "  (up to the partition count) scale them. aiohttp's client was ~38 % of the worker's",
    "  CPU in a webhook flood; the sender's own HTTP/1.1 client (`services/webhooks/http1.py`,",
    "  since 2026-12-06) took the worker from 0.30-0.38 to 0.19-0.29 ms of CPU per delivery",
    "  (interleaved runs; the baseline is still raw aiohttp POSTs).",
    "- Queries read the `(device, time DESC)` index; the aggregate reads `points` with",
    "  `date_bin` here (plain PostgreSQL); on TimescaleDB whole hours/days come from the",
    "  continuous aggregates (`docs/storage.md`).",
    "",
]


def write_doc(figures: Figures, sections: list[str]) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`uv run python -m bench`). Every figure is measured in the same",
        "run as its baseline, on the same embedded servers (tansu, embedded PostgreSQL 18,",
        "Mosquitto), with the API and the Faust worker as separate processes, as `hivepipe up`",
        "runs them; the load generator shares the machine with them.",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- sections: {', '.join(sections)}",
        "",
        "| measure | figure | ratio / target |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in figures.rows),
        "",
        *([f"![throughput and CPU per uplink]({CHART.name})", ""] if CHART.exists() else []),
        *dated_sections(DOC.read_text() if DOC.exists() else ""),
        *NOTES,
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines))


def dated_sections(doc: str) -> list[str]:
    """The sections of an earlier ``docs/benchmarks.md`` whose heading starts with a date
    (``## 2026-12-06: ...``, ``## Scale-out (2026-12-06)``): figures of a particular change,
    kept across runs."""
    kept: list[str] = []
    keeping = False
    for line in doc.splitlines():
        if line.startswith("## "):
            keeping = re.search(r"\b20\d\d-\d\d-\d\d\b", line) is not None
        if keeping:
            kept.append(line)
    if kept and kept[-1] != "":
        kept.append("")
    return kept


if __name__ == "__main__":
    main()
