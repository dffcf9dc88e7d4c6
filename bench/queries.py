"""Query latency on a large table: a 24-hour page and a 30-day hourly aggregate, over HTTP."""

from __future__ import annotations

import random
import time

import httpx
import psycopg
from rich.progress import Progress

from bench.callbacks import percentile
from bench.env import Running

#: One point every 5 minutes per device.
STEP = 300


def generate_points(url: str, total: int, devices: int = 1000) -> tuple[list[str], float]:
    """Insert ``total`` points over ``devices`` devices (owned by admin); returns ids and end."""
    per_device = total // devices
    end = 1_700_000_000.0
    start = end - per_device * STEP
    ids = [f"Q{i:05X}" for i in range(devices)]
    with psycopg.connect(url, autocommit=True) as conn:
        owner = conn.execute("SELECT id FROM users WHERE username = 'admin'").fetchone()
        assert owner is not None
        conn.execute(
            "INSERT INTO devices (id, model, network, owner_id)"
            " SELECT unnest(%s::text[]), 'orbit-t', 'sigfox', %s ON CONFLICT DO NOTHING",
            (ids, owner[0]),
        )
        with Progress(transient=True) as progress:
            task = progress.add_task(f"generating {total:,} points", total=devices)
            for first in range(0, devices, 20):
                chunk = ids[first : first + 20]
                conn.execute(
                    "INSERT INTO points (device, metric, time, value, unit)"
                    " SELECT d, 'temperature', to_timestamp(%s + i * %s),"
                    "        round((15 + 10 * random())::numeric, 2), '°C'"
                    " FROM unnest(%s::text[]) AS d, generate_series(0, %s - 1) AS i"
                    " ON CONFLICT DO NOTHING",
                    (start, STEP, chunk, per_device),
                )
                progress.advance(task, len(chunk))
        conn.execute("ANALYZE points")
    return ids, end


def measure_queries(
    run: Running, ids: list[str], end: float, *, hours: int, samples: int = 200
) -> dict[str, float]:
    """p50/p99 (ms) of a 24-hour page and a 30-day hourly aggregate for random devices."""
    headers = {"X-API-Key": run.api_key}
    page: list[float] = []
    aggregate: list[float] = []
    rng = random.Random(7)
    with httpx.Client(base_url=run.base_url, headers=headers, timeout=30) as client:
        for _ in range(samples):
            device = rng.choice(ids)
            t0 = time.perf_counter()
            r = client.get(
                f"/v1/devices/{device}/data", params={"from": end - 86400, "to": end, "limit": 1000}
            )
            page.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text[:200]
            assert len(r.json()["data"]) >= 280, "a 24-hour page holds 288 points"
            t0 = time.perf_counter()
            r = client.get(
                f"/v1/devices/{device}/data/aggregate",
                params={"from": end - 30 * 86400, "to": end, "bucket": 3600, "fn": "avg"},
            )
            aggregate.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text[:200]
            assert len(r.json()["data"]) >= hours - 1, "one bucket per hour of data"
    return {
        "page_p50": percentile(page, 0.5) * 1000,
        "page_p99": percentile(page, 0.99) * 1000,
        "agg_p50": percentile(aggregate, 0.5) * 1000,
        "agg_p99": percentile(aggregate, 0.99) * 1000,
    }


def bench_queries(run: Running, total: int) -> dict[str, float]:
    started = time.perf_counter()
    ids, end = generate_points(run.settings.database_url or "", total)
    generated = time.perf_counter() - started
    hours = min(30 * 24, (total // len(ids)) * STEP // 3600)
    result = measure_queries(run, ids, end, hours=hours)
    result["generate_rate"] = total / generated
    return result
