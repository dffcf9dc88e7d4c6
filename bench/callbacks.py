"""End-to-end: Sigfox callbacks in, points stored, against raw Kafka and raw insert baselines."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import stamina
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.progress import Progress

from bench.env import Running
from bench.http_load import HttpLoad, http_load
from services.platform.events import TOPIC_READINGS, DataPoint, UplinkEnvelope, dumps


@dataclass
class Figures:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, name: str, value: str, ratio: str = "") -> None:
        self.rows.append((name, value, ratio))


def frame(i: int) -> str:
    """An Orbit 0x01 frame with 4 temperatures."""
    temps = [2000 + (i + k) % 500 for k in range(4)]
    return "010f" + "".join(f"{t & 0xFFFF:04x}" for t in temps)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def register_devices(client: httpx.AsyncClient, key: str, count: int) -> list[str]:
    ids = device_ids(count)
    sem = asyncio.Semaphore(32)

    # Idempotent (201, then 409): a request lost with its connection is sent again, up to twice
    # (once, a connection closed under a request failed a whole `make bench` section).
    @stamina.retry(on=httpx.TransportError, attempts=3, wait_initial=0.2)
    async def post(device: str) -> httpx.Response:
        return await client.post(
            "/v1/devices", json={"id": device, "model": "orbit-t"}, headers={"X-API-Key": key}
        )

    async def one(device: str) -> None:
        async with sem:
            r = await post(device)
            assert r.status_code in (201, 409), r.text

    await asyncio.gather(*(one(d) for d in ids))
    return ids


#: Where each run's subscriber stopped reading ``readings`` (per Kafka and topic): the next run
#: on the same pipeline starts there, instead of reading every earlier run's messages again
#: (which cost tansu, in the next run's measured window, a fetch of all of them).
_READ_UP_TO: dict[tuple[str, str], dict[int, int]] = {}


async def _readings_subscriber(kafka: str, topic: str) -> AIOKafkaConsumer:
    """A consumer of every partition of ``topic``, from where the last run stopped, else from
    the start (tansu's end offsets are not to be trusted for "latest")."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    await consumer.topics()  # the metadata, for the partitions
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    read_up_to = _READ_UP_TO.get((kafka, topic), {})
    for tp in partitions:
        if tp.partition in read_up_to:
            consumer.seek(tp, read_up_to[tp.partition])
        else:
            await consumer.seek_to_beginning(tp)
    return consumer


#: The Sigfox network time of a callback of seqNumber 0; each later seqNumber is 10 minutes on.
BASE_TIME = 1_700_000_000


def device_ids(count: int) -> list[str]:
    return [f"B{i:05X}" for i in range(count)]


def callback_body(ids: Sequence[str], i: int, seq_base: int = 0) -> dict[str, Any]:
    """The ``i``-th callback of a run: the devices in turn, each one's seqNumber (and time)
    moving on once every device has sent."""
    seq = seq_base + i // len(ids)
    return {
        "device": ids[i % len(ids)],
        "time": BASE_TIME + seq * 600,
        "data": frame(i),
        "seqNumber": seq,
    }


@dataclass
class Posted:
    """What :func:`post_callbacks` saw: ``started`` (``perf_counter``) at the first post,
    ``seconds`` until the last answer, the callbacks answered 204 and each answer's time."""

    started: float
    seconds: float
    accepted: int
    answers: list[float]


async def post_callbacks(
    client: HttpLoad,
    path: str,
    token: str,
    ids: Sequence[str],
    n: int,
    *,
    concurrency: int = 64,
    rate: float | None = None,
    seq_base: int = 0,
    on_send: Callable[[dict[str, Any]], None] | None = None,
) -> Posted:
    """Post ``n`` Sigfox callbacks to ``path``: the load generator of hivepipe's flood and of
    its baselines (the same bodies, headers and connections, so that the figures compare).

    Without ``rate`` the callbacks go as fast as ``concurrency`` connections allow (a flood);
    with it they are sent open-loop at ``rate`` per second. ``on_send`` is told each body
    just before it is sent."""
    sem = asyncio.Semaphore(concurrency)
    prepared = client.prepare(path, {"X-Callback-Token": token, "Content-Type": "application/json"})
    accepted = 0
    answers: list[float] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("Sigfox callbacks", total=n)

        async def post(i: int) -> None:
            nonlocal accepted
            body = callback_body(ids, i, seq_base)
            if rate:
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            async with sem:
                if on_send is not None:
                    on_send(body)
                posted = time.perf_counter()
                status, _ = await client.post(prepared, orjson.dumps(body))
                answers.append(time.perf_counter() - posted)
            if status == 204:
                accepted += 1
            progress.advance(task)

        started = time.perf_counter()
        await asyncio.gather(*(post(i) for i in range(n)))
    return Posted(started, time.perf_counter() - started, accepted, answers)


async def drive_callbacks(
    run: Running,
    n: int,
    *,
    devices: int = 1000,
    concurrency: int = 64,
    figures: Figures,
    rate: float | None = None,
    seq_base: int = 0,
    register: bool = True,
) -> dict[str, float]:
    """Post ``n`` callbacks, wait until every point is stored; returns the pipeline rates.

    Without ``rate`` the callbacks go as fast as ``concurrency`` connections allow (a flood:
    the latency is then mostly the age of the backlog); with it they are sent open-loop at
    ``rate`` per second. ``seq_base``: the first Sigfox seqNumber, so that a second run on one
    pipeline sends new uplinks, not duplicates. Only the points of this run's callbacks count.
    ``register`` False: an earlier run registered the devices (only callbacks are sent).
    """
    s = run.settings
    async with (
        httpx.AsyncClient(base_url=run.base_url, timeout=30) as admin,
        http_load(run.base_url, concurrency) as client,
    ):
        if register:
            ids = await register_devices(admin, run.api_key, devices)
        else:
            ids = device_ids(devices)
        sent_at: dict[tuple[str, float], float] = {}
        latencies: list[float] = []
        stored_points = 0
        done = asyncio.Event()

        consumer = await _readings_subscriber(s.kafka or "", s.topic(TOPIC_READINGS))

        async def watch() -> None:
            nonlocal stored_points
            while not done.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for record in records:
                        value = orjson.loads(record.value)
                        points = value["points"]
                        key = (value["device"], float(points[-1]["time"]))
                        if key in sent_at:
                            stored_points += len(points)
                            latencies.append(value["stored"] - sent_at.pop(key))
                if stored_points >= 4 * n:
                    done.set()

        def sent(body: dict[str, Any]) -> None:
            sent_at[(body["device"], float(body["time"]))] = time.time()

        watcher = asyncio.create_task(watch())
        posted = await post_callbacks(
            client,
            "/callbacks/sigfox",
            s.token,
            ids,
            n,
            concurrency=concurrency,
            rate=rate,
            seq_base=seq_base,
            on_send=sent,
        )
        try:
            await asyncio.wait_for(done.wait(), timeout=max(60, n / 200))
        except TimeoutError:
            pass
        total_s = time.perf_counter() - posted.started
        done.set()
        await watcher
        _READ_UP_TO[(s.kafka or "", s.topic(TOPIC_READINGS))] = {
            tp.partition: await consumer.position(tp) for tp in consumer.assignment()
        }
        await consumer.stop()
    return {
        "accepted": posted.accepted,
        "accept_rate": posted.accepted / posted.seconds,
        "points_rate": stored_points / total_s,
        "stored_points": stored_points,
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "answer_p50": percentile(posted.answers, 0.50) * 1000,
        "answer_p99": percentile(posted.answers, 0.99) * 1000,
    }


async def baseline_kafka(run: Running, n: int) -> float:
    """Raw aiokafka: produce the same envelopes (acks=all) and consume them back; msgs/s."""
    s = run.settings
    topic = s.topic("baseline")
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka, acks="all", linger_ms=1, max_batch_size=1 << 20
    )
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=s.kafka, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await producer.start()
    values = [
        dumps(
            UplinkEnvelope(
                source="sigfox",
                device=f"B{i % 1000:05X}",
                received=1.7e9,
                payload_hex=frame(i),
                meta={"seq": i},
            ).to_dict()
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    futures = [await producer.send(topic, v, key=b"k%d" % (i % 1000)) for i, v in enumerate(values)]
    await asyncio.gather(*futures)
    await consumer.start()
    got = 0
    while got < n:
        batches = await consumer.getmany(timeout_ms=500, max_records=10000)
        got += sum(len(r) for r in batches.values())
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await producer.stop()
    return n / elapsed


async def fill_topic(run: Running, n: int) -> float:
    """``n`` uplink-sized messages into a topic of their own (acks=all), msgs/s: what a broker
    that has run for a while holds."""
    s = run.settings
    topic = s.topic("bench-filler")
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    value = dumps(
        UplinkEnvelope(
            source="sigfox", device="B00000", received=1.7e9, payload_hex=frame(0), meta={"seq": 0}
        )
    )
    started = time.perf_counter()
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("filling the broker", total=n)
            for chunk in range(0, n, 10_000):
                futures = [
                    await producer.send(topic, value, key=b"k%d" % (i % 1000))
                    for i in range(chunk, min(n, chunk + 10_000))
                ]
                await asyncio.gather(*futures)
                progress.advance(task, len(futures))
    finally:
        await producer.stop()
    return n / (time.perf_counter() - started)


async def baseline_insert(run: Running, n_points: int) -> float:
    """Raw multi-row INSERT of the same shape of points into the same database; rows/s.

    The table is logged (WAL, fsync'd commits) and shaped like ``points``: the same primary
    key and the same ``(device, time DESC)`` index, so that the baseline pays what storing
    points pays (a TEMP table, without WAL or the second index, flattered it)."""
    import psycopg

    url = run.settings.database_url or ""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS bench_baseline_points")
        await conn.execute(
            "CREATE TABLE bench_baseline_points (device text NOT NULL, metric text NOT NULL,"
            " time timestamptz NOT NULL, value float8 NOT NULL, unit text,"
            " PRIMARY KEY (device, metric, time))"
        )
        await conn.execute("CREATE INDEX ON bench_baseline_points (device, time DESC)")
        points = [
            DataPoint(f"B{i % 1000:05X}", 1.6e9 + i, "temperature", 20.0, "°C")
            for i in range(n_points)
        ]
        started = time.perf_counter()
        for chunk in range(0, n_points, 1000):
            part = points[chunk : chunk + 1000]
            placeholders = ",".join(["(%s,%s,to_timestamp(%s),%s,%s)"] * len(part))
            args: list[Any] = []
            for p in part:
                args.extend((p.device, p.metric, p.time, p.value, p.unit))
            await conn.execute(
                f"INSERT INTO bench_baseline_points VALUES {placeholders}"  # noqa: S608
                " ON CONFLICT DO NOTHING",
                args,
            )
        rate = n_points / (time.perf_counter() - started)
        await conn.execute("DROP TABLE bench_baseline_points")
        return rate


def summarise(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
