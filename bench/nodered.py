"""The Node-RED flow of the performance issue, measured in the same run as hivepipe.

The issue compares hivepipe with "a Node-RED flow built as a competent user would" (HTTP-in
with a token check, a function node decoding the Orbit frame, a join node batching 250
callbacks or 100 ms into one multi-row ``INSERT … ON CONFLICT DO NOTHING``), measured once on
another day; this machine's speed drifts by ±40 %, so the flow (``bench/nodered/flows.json``)
runs here as a baseline, on the same PostgreSQL, driven by the same load generator
(:func:`bench.callbacks.post_callbacks`) while hivepipe is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psycopg

from bench.callbacks import callback_body, percentile, post_callbacks
from bench.cpu import measured
from bench.http_load import http_load
from services.codecs.orbit_uplink import decode_orbit
from services.entrypoints.embedded import free_port
from services.entrypoints.roles import stop_process
from services.platform import UplinkEnvelope

NODERED_DIR = Path(__file__).with_name("nodered")
FLOWS = NODERED_DIR / "flows.json"
TABLE = "nodered_points"
#: The flow's two Sigfox callbacks: answered at once, and answered once their INSERT committed.
AT_ONCE = "/sigfox"
AFTER_COMMIT = "/sigfox-after-commit"
#: How often "stored" is looked for, once every callback has been answered.
POLL_S = 0.05

_SCHEMA = (
    f"CREATE TABLE {TABLE} (device text NOT NULL, metric text NOT NULL,"
    " time timestamptz NOT NULL, value float8 NOT NULL, unit text,"
    " PRIMARY KEY (device, metric, time))",
    f"CREATE INDEX ON {TABLE} (device, time DESC)",
)


class NodeRedUnavailable(RuntimeError):
    """Node.js or npm is missing, or the flow's packages cannot be installed: the baseline is
    skipped (``make bench`` goes on without it)."""


class NodeRed(NamedTuple):
    base_url: str
    pid: int


def ensure_installed(directory: Path = NODERED_DIR) -> None:
    """``npm ci`` the flow's packages unless ``node_modules`` already holds this lock file's
    (npm writes its own copy, ``node_modules/.package-lock.json``, at each install)."""
    if not shutil.which("node"):
        raise NodeRedUnavailable("node is not installed")
    lock, installed = directory / "package-lock.json", directory / "node_modules/.package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if not npm:
        raise NodeRedUnavailable("npm is not installed")
    verb = "ci" if lock.exists() else "install"
    try:
        done = subprocess.run(
            [npm, verb, "--no-audit", "--no-fund"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired as exc:
        raise NodeRedUnavailable(f"`npm {verb}` took over 10 minutes") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise NodeRedUnavailable(f"`npm {verb}` failed: {last}")


def _answers(base_url: str) -> bool:
    """Whether the flow is running: a callback without its token gets the flow's 401 (before
    the flow is started, the HTTP server answers 404, or nothing)."""
    request = urllib.request.Request(base_url + AT_ONCE, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


@contextlib.contextmanager
def running_nodered(database_url: str, token: str, *, timeout: float = 60) -> Iterator[NodeRed]:
    """Node-RED with the bench's flow on a free 127.0.0.1 port, its user directory a temporary
    one; stopped on exit (SIGTERM, then SIGKILL)."""
    ensure_installed()
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="hivepipe-nodered-") as user_dir,
        open(Path(user_dir) / "node-red.log", "wb") as log,
    ):
        env = {
            **os.environ,
            "NODERED_PORT": str(port),
            "NODERED_PG_URL": database_url,
            "NODERED_CALLBACK_TOKEN": token,
        }
        proc = subprocess.Popen(
            ["node", "run.js", user_dir],
            cwd=NODERED_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not _answers(base_url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (Path(user_dir) / "node-red.log").read_text(errors="replace")[-800:]
                    raise RuntimeError(f"Node-RED did not start: {tail}")
                time.sleep(0.2)
            yield NodeRed(base_url, proc.pid)
        finally:
            stop_process(proc, timeout=10)


def create_table(database_url: str) -> None:
    """``nodered_points``: logged, shaped like hivepipe's ``points`` (the same primary key and
    ``(device, time DESC)`` index), as the issue's flow had it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        for statement in _SCHEMA:
            conn.execute(statement)


def drop_table(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def expected_rows(ids: Sequence[str], n: int, seq_base: int = 0) -> int:
    """The rows ``n`` callbacks leave in an empty ``nodered_points``, decoded by hivepipe's own
    Orbit codec. Fewer than 4 × n: the bench's frames hold 4 samples 15 minutes apart and a
    device's callbacks are 10 minutes apart, so a callback repeats two samples of the one 30
    minutes before it (``ON CONFLICT DO NOTHING`` keeps one row of each)."""
    keys: set[tuple[str, str, float]] = set()
    for i in range(n):
        body = callback_body(ids, i, seq_base)
        envelope = UplinkEnvelope(
            source="sigfox",
            device=body["device"],
            received=float(body["time"]),
            payload_hex=body["data"],
        )
        keys.update((p.device, p.metric, p.time) for p in decode_orbit(envelope).points)
    return len(keys)


async def _count(conn: psycopg.AsyncConnection[tuple[int]]) -> int:
    row = await (await conn.execute(f"SELECT count(*) FROM {TABLE}")).fetchone()  # noqa: S608
    return int(row[0]) if row else 0


async def flood_nodered(
    node: NodeRed,
    database_url: str,
    token: str,
    ids: Sequence[str],
    n: int,
    *,
    path: str = AT_ONCE,
    rate: float | None = None,
    seq_base: int = 0,
    concurrency: int = 64,
) -> dict[str, float]:
    """Post ``n`` callbacks to the flow (as :func:`bench.callbacks.drive_callbacks` posts them
    to hivepipe) and wait until their rows are in ``nodered_points`` (emptied first).

    Points stored/s counts as hivepipe's figure does: every point of a callback, those that
    ``ON CONFLICT`` skipped included, once its INSERT has committed, over the time from the
    first post to the last row seen. The table is counted every ``POLL_S`` once every callback
    has been answered, not during the run: a count during a flood would cost PostgreSQL CPU
    that the flow would be charged for (the last batch is at most 100 ms older than the last
    answer)."""
    expected = expected_rows(ids, n, seq_base)
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        http_load(node.base_url, concurrency) as client,
    ):
        await conn.execute(f"TRUNCATE {TABLE}")
        posted = await post_callbacks(
            client, path, token, ids, n, concurrency=concurrency, rate=rate, seq_base=seq_base
        )
        deadline = time.perf_counter() + max(60, n / 200)
        rows = await _count(conn)
        while rows < expected and time.perf_counter() < deadline:
            await asyncio.sleep(POLL_S)
            rows = await _count(conn)
        total_s = time.perf_counter() - posted.started
    stored = 4 * n if rows >= expected else rows
    return {
        "accepted": posted.accepted,
        "accept_rate": posted.accepted / posted.seconds,
        "points_rate": stored / total_s,
        "stored_points": stored,
        "rows": rows,
        "expected_rows": expected,
        "answer_p50": percentile(posted.answers, 0.50) * 1000,
        "answer_p99": percentile(posted.answers, 0.99) * 1000,
    }


@dataclass
class NodeRedFigures:
    at_once: dict[str, float]
    after_commit: dict[str, float]
    #: CPU ms per callback at a steady 500/s: ``node-red``, ``postgres``, ``total`` and the
    #: load generator's (``_load``, not counted).
    cpu: dict[str, float]


def measure_nodered(
    database_url: str,
    postgres_pid: int,
    token: str,
    ids: Sequence[str],
    n: int,
    *,
    steady_n: int = 5_000,
    steady_seq_base: int = 0,
) -> NodeRedFigures:
    """The flow's flood answering at once, the same answering after its INSERT commits, and
    its CPU per callback at a steady 500/s (Node-RED and PostgreSQL with its backends; the
    load generator excluded), after a warm-up as hivepipe's (1,000 callbacks at 500/s)."""
    create_table(database_url)
    try:
        with running_nodered(database_url, token) as node:

            def flood(
                count: int, path: str = AT_ONCE, rate: float | None = None, seq_base: int = 0
            ) -> dict[str, float]:
                return asyncio.run(
                    flood_nodered(
                        node,
                        database_url,
                        token,
                        ids,
                        count,
                        path=path,
                        rate=rate,
                        seq_base=seq_base,
                    )
                )

            flood(1_000, rate=500.0, seq_base=10_000)
            flood(1_000, path=AFTER_COMMIT, rate=500.0, seq_base=10_000)
            at_once = flood(n)
            after_commit = flood(n, path=AFTER_COMMIT)
            cpu = measured(
                {"node-red": node.pid, "postgres": postgres_pid},
                steady_n,
                lambda: flood(steady_n, rate=500.0, seq_base=steady_seq_base),
            )
    finally:
        drop_table(database_url)
    return NodeRedFigures(at_once, after_commit, cpu)
