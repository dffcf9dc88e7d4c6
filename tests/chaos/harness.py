"""One fault-injection scenario: load, one fault, then the count of what was kept.

:func:`run_scenario` registers a Sigfox device and an MQTT device, checks that a first uplink of
each is stored (the whole path is up), then drives :mod:`tests.chaos.load` for ``duration``
seconds, injects the fault ``fault_at`` seconds in, and waits (up to ``settle`` seconds after the
load) for every accepted uplink to be stored. :class:`Figures` holds what the table prints:
accepted, lost (accepted, never stored), doubled (points stored twice), refused (callbacks not
answered 2xx, and publishes not PUBACKed), the time to recover (from the fault until an
uplink of every source sent after it is stored) and how long ``/readyz`` was not 200.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.table import Table

from tests.chaos.faults import Fault
from tests.chaos.load import MqttLoad, Points, Sent, sigfox_load
from tests.chaos.pipeline import Pipeline

SIGFOX_DEVICE = "C4A05F"
MQTT_DEVICE = "C4A0A7"


@dataclass
class Figures:
    fault: str
    sent: int
    accepted: int
    lost: int
    doubled: int
    refused: int
    #: Seconds from the fault until every source had an uplink sent after it stored; None: never.
    recovery: float | None
    #: Why messages were refused, by answer (``503``, ``ReadError``...).
    refusals: Counter[str] = field(default_factory=Counter)
    restarts: dict[str, float] = field(default_factory=dict)
    #: Seconds during which ``/readyz`` (sampled every 0.25 s) answered anything but 200.
    unready: float = 0.0
    #: The longest a callback waited for its answer (seconds).
    slowest: float = 0.0
    #: Lost uplinks by source (``sigfox``, ``mqtt``), and the send times of the first few.
    lost_by: dict[str, int] = field(default_factory=dict)
    lost_at: list[float] = field(default_factory=list)

    @property
    def refused_share(self) -> float:
        return self.refused / self.sent if self.sent else 0.0


async def _register(pipeline: Pipeline) -> None:
    headers = {"X-API-Key": pipeline.api_key}
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=10) as client:
        for device, model in ((SIGFOX_DEVICE, "orbit-t"), (MQTT_DEVICE, "json")):
            answer = await client.post(
                "/v1/devices", json={"id": device, "model": model}, headers=headers
            )
            assert answer.status_code == 201, answer.text


async def _first_uplinks_stored(pipeline: Pipeline, points: Points, base: int) -> None:
    """One uplink of each source, stored: every role of the path is up (MQTT subscribed)."""
    mqtt = MqttLoad(pipeline.mqtt_url, MQTT_DEVICE)
    try:
        deadline = time.monotonic() + 90
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            await sigfox_load(
                pipeline.api_url,
                pipeline.token,
                SIGFOX_DEVICE,
                rate=1,
                duration=1,
                base=base - attempt,
                first_seq=10**6 + attempt,  # never one of the load's
            )
            mqtt.publish(Sent(0, time.monotonic(), base - attempt))
            newest = await points.newest()
            if newest and len(newest) == 2:
                return
            await asyncio.sleep(1.0)
    finally:
        mqtt.close()
    raise TimeoutError("no uplink stored 90 s after hivepipe up started")


async def _watch(points: Points, samples: list[tuple[float, dict[str, int]]]) -> None:
    while True:
        newest = await points.newest()
        if newest is not None:
            samples.append((time.monotonic(), newest))
        await asyncio.sleep(0.2)


async def _probe_readyz(api_url: str, unready: list[float]) -> None:
    """Adds the sampling period to ``unready[0]`` each time ``/readyz`` is not 200."""
    period = 0.25
    async with httpx.AsyncClient(base_url=api_url, timeout=2.0) as client:
        while True:
            started = time.monotonic()
            try:
                ready = (await client.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                ready = False
            if not ready:
                unready[0] += max(period, time.monotonic() - started)
            await asyncio.sleep(max(0.0, started + period - time.monotonic()))


def _recovery(
    loads: dict[str, list[Sent]], samples: list[tuple[float, dict[str, int]]], fault: float
) -> float | None:
    worst = 0.0
    for device, sent in loads.items():
        after = next((s for s in sent if s.accepted and s.at >= fault), None)
        if after is None:
            return None
        seen = next((at for at, newest in samples if newest.get(device, 0) >= after.time), None)
        if seen is None:
            return None
        worst = max(worst, seen - fault)
    return worst


async def run_scenario(
    pipeline: Pipeline,
    fault: Fault,
    *,
    duration: float = 30.0,
    fault_at: float = 8.0,
    sigfox_rate: float = 150.0,
    mqtt_rate: float = 50.0,
    settle: float = 60.0,
) -> Figures:
    """Load, ``fault`` once ``fault_at`` seconds in, then count; see the module's docstring."""
    points = Points(pipeline.database_url, [SIGFOX_DEVICE, MQTT_DEVICE])
    await _register(pipeline)
    base = int(time.time()) - 86_400
    await _first_uplinks_stored(pipeline, points, base - 1)
    samples: list[tuple[float, dict[str, int]]] = []
    unready = [0.0]
    watchers = [
        asyncio.create_task(_watch(points, samples)),
        asyncio.create_task(_probe_readyz(pipeline.api_url, unready)),
    ]
    mqtt = MqttLoad(pipeline.mqtt_url, MQTT_DEVICE)
    try:
        started = time.monotonic()
        sigfox = asyncio.create_task(
            sigfox_load(
                pipeline.api_url,
                pipeline.token,
                SIGFOX_DEVICE,
                rate=sigfox_rate,
                duration=duration,
                base=base,
            )
        )
        published = asyncio.create_task(mqtt.run(rate=mqtt_rate, duration=duration, base=base))
        await asyncio.sleep(max(0.0, started + fault_at - time.monotonic()))
        injected = time.monotonic()
        await asyncio.to_thread(fault.inject, pipeline)
        loads = {SIGFOX_DEVICE: await sigfox, MQTT_DEVICE: await published}
        accepted = {d: {s.time for s in sent if s.accepted} for d, sent in loads.items()}
        deadline = time.monotonic() + settle
        stored = await points.stored()
        while time.monotonic() < deadline and (
            stored is None
            or any(accepted[d] - set(stored[d]) for d in loads)
            or _recovery(loads, samples, injected) is None
        ):
            await asyncio.sleep(1.0)
            stored = await points.stored() or stored
    finally:
        for watcher in watchers:
            watcher.cancel()
        mqtt.close()
        await points.close()
    assert stored is not None, "PostgreSQL never answered after the fault"
    every = [s for sent in loads.values() for s in sent]
    missing = {d: accepted[d] - set(stored[d]) for d in loads}
    sources = {SIGFOX_DEVICE: "sigfox", MQTT_DEVICE: "mqtt"}
    return Figures(
        fault=fault.name,
        sent=len(every),
        accepted=sum(len(times) for times in accepted.values()),
        lost=sum(len(times) for times in missing.values()),
        doubled=sum(n - 1 for d in loads for t, n in stored[d].items() if t >= base and n > 1),
        refused=sum(not s.accepted for s in every),
        recovery=_recovery(loads, samples, injected),
        refusals=Counter(s.outcome for s in every if not s.accepted),
        restarts=pipeline.restarts(),
        unready=unready[0],
        slowest=max((s.waited for s in loads[SIGFOX_DEVICE]), default=0.0),
        lost_by={sources[d]: len(times) for d, times in missing.items() if times},
        lost_at=sorted(
            s.at - injected for d, sent in loads.items() for s in sent if s.time in missing[d]
        )[:10],
    )


def print_table(results: list[Figures], console: Console | None = None) -> None:
    """The figures of every scenario run, one row each."""
    table = Table(title="hivepipe under faults (make chaos)")
    columns = (
        "fault",
        "accepted",
        "lost",
        "doubled",
        "refused",
        "slowest answer",
        "time to recover",
        "/readyz",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "fault" else "right")
    for r in results:
        why = ", ".join(f"{n} {outcome}" for outcome, n in r.refusals.most_common())
        table.add_row(
            r.fault,
            f"{r.accepted:,} of {r.sent:,}",
            str(r.lost) + "".join(f" ({n} {src})" for src, n in r.lost_by.items()),
            str(r.doubled),
            f"{r.refused} ({r.refused_share:.2%})" + (f": {why}" if why else ""),
            f"{r.slowest:.1f} s",
            "never" if r.recovery is None else f"{r.recovery:.1f} s",
            f"not 200 for {r.unready:.1f} s" if r.unready else "200",
        )
    (console or Console(width=None if sys.stdout.isatty() else 140)).print(table)
