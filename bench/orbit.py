"""The Sigfox downlink answer under load: its latency while plain callbacks keep the API busy.

``bench_downlink_latency(run)`` registers Orbit devices, queues updates on each (two downlinks'
worth), starts a separate process that posts plain Sigfox callbacks at a steady rate (default
500/s, aiohttp), and meanwhile sends the downlink requests and times each one, client-side
(request to full answer) and server-side (the API's ``hivepipe_sigfox_downlink_answer_seconds``
histogram, scraped from ``/metrics`` before and after). The load runs in its own process so that
its event loop does not delay the measured requests' (the machine is shared all the same); it
is spawned, so call this from a script guarded by ``if __name__ == "__main__"``.

The downlink requests are sent open-loop at a fixed rate; only answers received while the load
was still running count (``downlinks_under_load``). The ``load_*`` figures say what the load
really was: offered and completed rate, and the plain callbacks' own latency, the yardstick of
how busy the API was. ``machine_busy`` is the share of the machine's CPU time that was busy
while the downlink requests ran (every process: the pipeline, its servers, the load, the bench).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiohttp
import httpx
import orjson

from bench.callbacks import frame, percentile, register_devices
from bench.env import Running

#: Two downlinks' worth per device (2 updates each, by priority): then nothing is left.
UPDATES = {"sample_interval": 30, "batch_size": 3, "led": 1, "downlink_every": 12}
_BUCKET = re.compile(
    r'^hivepipe_sigfox_downlink_answer_seconds_bucket\{answer="downlink",le="([^"]+)"\} (\S+)$'
)


async def _post_load(
    base_url: str, token: str, ids: list[str], rate: float, duration: float, seq_base: int
) -> dict[str, float]:
    """Post plain callbacks at ``rate`` per second for ``duration`` seconds, each a new uplink
    (seqNumber from ``seq_base`` on: a duplicate would cost the pipeline almost nothing)."""
    headers = {"X-Callback-Token": token, "Content-Type": "application/json"}
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    sem = asyncio.Semaphore(256)
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector) as client:

        async def post(i: int) -> None:
            device = ids[i % len(ids)]
            seq = seq_base + i // len(ids)
            body = {"device": device, "time": 1_700_000_000 + seq * 600, "data": frame(i)}
            body["seqNumber"] = seq
            async with sem:
                started = time.perf_counter()
                try:
                    async with client.post(
                        "/callbacks/sigfox", data=orjson.dumps(body), headers=headers
                    ) as r:
                        await r.read()
                        status = r.status
                except aiohttp.ClientError:
                    status = 0
                latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

        loop = asyncio.get_running_loop()
        tick = 0.01
        started = loop.time()
        sent = 0
        while (now := loop.time()) - started < duration:
            due = int((now - started) * rate) + 1
            while sent < due:
                task = asyncio.create_task(post(sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(tick)
        offered_s = loop.time() - started
        backlog = len(tasks)
        await asyncio.gather(*tasks)
        total_s = loop.time() - started
    done = sum(statuses.values())
    return {
        "offered": sent / offered_s,
        "completed_rate": done / total_s,
        "accepted": statuses.get(204, 0),
        "errors": done - statuses.get(204, 0),
        "backlog_at_end": backlog,
        "seconds": total_s,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def _load_process(
    base_url: str, token: str, ids: list[str], rate: float, duration: float, seq_base: int
) -> dict[str, float]:
    # The load stands in for the network servers, which are remote in production: on this
    # shared box it yields the CPU to the system under test (it still keeps its rate: the
    # load_* figures say so).
    os.nice(10)
    import uvloop

    return uvloop.run(_post_load(base_url, token, ids, rate, duration, seq_base))


def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, from ``/proc/stat`` (jiffies)."""
    fields = [float(v) for v in open("/proc/stat").readline().split()[1:]]  # noqa: SIM115
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(start: tuple[float, float], end: tuple[float, float]) -> float:
    """The share of the machine's CPU time that was busy between two :func:`cpu_busy`."""
    total = end[1] - start[1]
    return (end[0] - start[0]) / total if total > 0 else float("nan")


async def _histogram(client: httpx.AsyncClient) -> dict[float, float]:
    text = (await client.get("/metrics")).text
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if m := _BUCKET.match(line):
            buckets[float(m.group(1))] = float(m.group(2))
    return buckets


def _server_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound (ms) of the bucket holding quantile ``q`` of the requests in between."""
    counts = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    if not counts or counts[-1][1] <= 0:
        return float("nan")
    total = counts[-1][1]
    for le, cumulative in counts:
        if cumulative >= q * total:
            return le * 1000
    return float("inf")


async def bench_downlink_latency(
    run: Running,
    *,
    devices: int = 500,
    load_rate: float = 500.0,
    load_devices: int = 1000,
    requests_per_second: float = 25.0,
    warmup: float = 3.0,
    id_prefix: str = "D",
    load_base_url: str | None = None,
    load_seq_base: int = 1000,
) -> dict[str, Any]:
    """Downlink request latency (ms) under ``load_rate`` plain callbacks/s; see the module.

    ``load_base_url`` sends the load to another API process of the same pipeline (to see what
    isolating the downlink requests from the uplink flood would give). ``load_seq_base``: the
    load's first Sigfox seqNumber; a second run on one pipeline needs another (say 2000), or
    its load is duplicates of the first's, which the API answers without publishing."""
    s = run.settings
    headers = {"X-API-Key": run.api_key}
    async with httpx.AsyncClient(base_url=run.base_url, timeout=30) as admin:
        load_ids = await register_devices(admin, run.api_key, load_devices)
        ids = [f"{id_prefix}{i:05X}" for i in range(devices)]
        sem = asyncio.Semaphore(16)

        async def prepare(device: str) -> None:
            async with sem:
                r = await admin.post(
                    "/v1/devices", json={"id": device, "model": "orbit-t"}, headers=headers
                )
                assert r.status_code in (201, 409), r.text
                r = await admin.post(
                    f"/v1/orbit/dev/{device}", json={"params": UPDATES}, headers=headers
                )
                assert r.status_code == 202, r.text

        await asyncio.gather(*(prepare(d) for d in ids))
        before = await _histogram(admin)

        requests = [(device, round_) for round_ in (1, 2) for device in ids]
        measure_s = len(requests) / requests_per_second
        # The load outlasts the measurement (sent open-loop, on schedule, whatever the latency)
        # by a margin; an answer that still arrives after the load ended is not counted.
        duration = warmup + measure_s + 10.0
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        load = loop.run_in_executor(
            pool,
            _load_process,
            load_base_url or run.base_url,
            s.token,
            load_ids,
            load_rate,
            duration,
            load_seq_base,
        )
        await asyncio.sleep(warmup)

        latencies: list[float] = []
        after_load: list[float] = []
        statuses: dict[int, int] = {}
        now = int(time.time())
        token_headers = {"X-Callback-Token": s.token, "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(base_url=run.base_url, connector=connector) as client:

            async def request(device: str, round_: int) -> None:
                body = {
                    "device": device,
                    "time": now + round_ * 600,
                    "data": "010f08fc",
                    "seqNumber": round_,
                    "ack": True,
                }
                t0 = time.perf_counter()
                async with client.post(
                    "/callbacks/sigfox", data=orjson.dumps(body), headers=token_headers
                ) as r:
                    payload = await r.read()
                    status = r.status
                elapsed = time.perf_counter() - t0
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and orjson.loads(payload)[device]["downlinkData"]:
                    (after_load if load.done() else latencies).append(elapsed)

            started = loop.time()
            cpu_start = cpu_busy()
            tasks = []
            for n, (device, round_) in enumerate(requests):
                await asyncio.sleep(max(0.0, started + n / requests_per_second - loop.time()))
                tasks.append(asyncio.create_task(request(device, round_)))
            await asyncio.gather(*tasks)
            machine_busy = busy_share(cpu_start, cpu_busy())
        load_figures = await load
        pool.shutdown()
        after = await _histogram(admin)
    return {
        "downlinks_under_load": len(latencies),
        "downlinks_after_load": len(after_load),
        "statuses": statuses,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "server_p50_ms_le": _server_quantile(before, after, 0.50),
        "server_p99_ms_le": _server_quantile(before, after, 0.99),
        "load_offered_per_s": load_figures["offered"],
        "load_completed_per_s": load_figures["completed_rate"],
        "load_accepted": load_figures["accepted"],
        "load_errors": load_figures["errors"],
        "load_backlog_at_end": load_figures["backlog_at_end"],
        "load_callback_p50_ms": load_figures["p50_ms"],
        "load_callback_p99_ms": load_figures["p99_ms"],
        "machine_busy": machine_busy,
    }


if __name__ == "__main__":
    import argparse

    from bench.env import running_pipeline

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    with running_pipeline() as running:
        figures = asyncio.run(
            bench_downlink_latency(running, devices=args.devices, load_rate=args.rate)
        )
    for name, value in figures.items():
        print(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}")
