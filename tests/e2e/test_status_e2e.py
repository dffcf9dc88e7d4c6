"""``hivepipe status`` against ``hivepipe up`` (``make run``), and the dashboard's metrics
against the /metrics of its real processes (issue #18).

One ``hivepipe up`` for the module (``tests/chaos/pipeline.py``); uplinks flow while the command
runs, as an operator would look at a busy pipeline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.entrypoints.process_table import read_table
from tests.chaos.pipeline import ROOT, Pipeline
from tests.dashboard import dashboard_metrics, scraped_names

DEVICE = "5A7A70"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with Pipeline.start(tmp_path_factory.mktemp("status")) as running:
        headers = {"X-API-Key": running.api_key}
        created = httpx.post(
            f"{running.api_url}/v1/devices",
            json={"id": DEVICE, "model": "orbit-t"},
            headers=headers,
            timeout=15,
        )
        assert created.status_code == 201, created.text
        yield running


class Uplinks:
    """Sigfox callbacks every ``interval`` seconds in a thread, until stopped."""

    def __init__(self, pipeline: Pipeline, *, first_seq: int, interval: float = 0.05) -> None:
        self.pipeline, self.seq, self.interval = pipeline, first_seq, interval
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.pipeline.api_url, timeout=10) as client:
            while not self._stop.is_set():
                self.seq += 1
                answer = client.post(
                    "/callbacks/sigfox",
                    json={
                        "device": DEVICE,
                        "time": 1_700_000_000 + self.seq * 1000,
                        "data": "010f08fc0906",
                        "seqNumber": self.seq % 4096,
                    },
                    headers={"X-Callback-Token": self.pipeline.token},
                )
                self.accepted += answer.status_code == 204
                time.sleep(self.interval)

    def __enter__(self) -> Uplinks:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def hivepipe_status(pipeline: Pipeline, *args: str) -> str:
    """The command as an operator runs it beside ``make run``: only the data directory set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEPIPE_")}
    env |= {"HIVEPIPE_DATA_DIR": str(pipeline.data_dir), "COLUMNS": "160", "NO_COLOR": "1"}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "services.entrypoints.cli", "status", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def figure(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if name in line)
    return line.split("│")[2].strip()


def test_status_shows_the_roles_and_the_pipeline_at_work(pipeline: Pipeline) -> None:
    # A dead letter: an uplink of a device nobody registered.
    unknown = httpx.post(
        f"{pipeline.api_url}/callbacks/sigfox",
        json={"device": "DEAD01", "time": 1_700_000_000, "data": "01", "seqNumber": 1},
        headers={"X-Callback-Token": pipeline.token},
        timeout=10,
    )
    assert unknown.status_code == 204, unknown.text
    with Uplinks(pipeline, first_seq=0) as uplinks:
        time.sleep(3)  # some stored before the command looks
        output = hivepipe_status(pipeline, "--interval", "3")
    assert uplinks.accepted > 20

    table = read_table(pipeline.data_dir)
    assert table is not None
    assert table.running
    for row in table.processes:
        assert re.search(
            rf"│ {re.escape(row.role)} +│ {re.escape(row.name)} +│ +{row.pid} ", output
        ), (
            row,
            output,
        )
    names = {row.name for row in table.processes}
    assert {"api-1", "api-2", "worker-1", "mqtt-1", "postgres", "kafka"} <= names
    assert "running" in output
    assert "crash-looping" not in output

    assert float(figure(output, "uplinks/s (last minute)")) > 0.2
    assert float(figure(output, "points stored/s")) > 1.0
    assert int(figure(output, "dead letters (last hour)").replace(",", "")) >= 1
    lag = int(figure(output, "consumer lag: uplinks").replace(",", ""))
    assert 0 <= lag <= uplinks.accepted
    assert figure(output, "webhook backlog").startswith("0 points")
    assert "!" not in output, output  # every source was read


def test_every_metric_the_dashboard_queries_is_served_by_a_process(pipeline: Pipeline) -> None:
    """The HELP/TYPE lines of each /metrics page list every family, sampled or not."""
    table = read_table(pipeline.data_dir)
    assert table is not None
    urls = [f"{pipeline.api_url}/metrics", pipeline.metrics_url]
    urls += [
        f"http://127.0.0.1:{row.metrics_port}/metrics"
        for row in table.processes
        if row.metrics_port is not None
    ]
    assert len(urls) >= 4  # the API, the supervisor, a worker, an MQTT adapter
    served: set[str] = set()
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
            served |= scraped_names(answer.read().decode())
    missing = dashboard_metrics() - served
    assert not missing, f"queried by the dashboard, served by no process: {sorted(missing)}"


def test_status_watch_refreshes_until_interrupted(pipeline: Pipeline) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEPIPE_")}
    env |= {"HIVEPIPE_DATA_DIR": str(pipeline.data_dir), "COLUMNS": "160"}
    env["PYTHONUNBUFFERED"] = "1"  # each refresh reaches the pipe as it is drawn
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "services.entrypoints.cli", "status", "--watch", "--interval", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Ctrl-C once it has refreshed (a loaded machine takes seconds per refresh).
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while sum("consumer lag" in line for line in lines) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    proc.send_signal(2)  # Ctrl-C
    rest, err = proc.communicate(timeout=20)
    out = "".join(lines) + rest
    assert proc.returncode == 0, err
    assert out.count("consumer lag") >= 2, out  # refreshed
    assert Path(pipeline.data_dir, "processes.json").exists()
