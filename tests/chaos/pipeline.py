"""``hivepipe up`` as a child process, exactly as an operator starts it, and its process tree.

:meth:`Pipeline.start` runs ``python -m services.entrypoints.cli up`` with its own data directory
(a temporary one), API port and supervisor metrics port, and no ``HIVEPIPE_*`` setting from the
test environment (so every server is embedded); it returns once the banner is printed, with the
admin key, the callback token and the servers' URLs. :meth:`Pipeline.kill` sends SIGKILL to one
of the supervisor's children, found by its command line in ``/proc``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from services.entrypoints import embedded

ROOT = Path(__file__).resolve().parents[2]

#: Command-line fragments of the supervisor's children, by what a fault names.
CHILDREN = {
    "worker": "services.entrypoints.cli worker",
    "mqtt": "services.entrypoints.cli ingest mqtt",
    "api": "services.entrypoints.cli api",
    "postgres": "/postgres -D",
    "kafka": "tansu",
    "mqtt-broker": "mosquitto",
}


def _processes() -> Iterator[tuple[int, int, Path]]:
    """(pid, parent pid, its ``/proc`` folder) of every process, from one pass over ``/proc``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (the parent) comes after the command name in parentheses, which may hold spaces.
        yield int(entry.name), int(stat.rsplit(")", 1)[1].split()[1]), entry


def children_of(parent: int) -> list[tuple[int, str]]:
    """The processes whose parent is ``parent``: (pid, command line)."""
    found = []
    for pid, ppid, entry in _processes():
        if ppid != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found.append((pid, cmdline.strip()))
    return found


@dataclass
class Pipeline:
    proc: subprocess.Popen[str]
    data_dir: Path
    log_path: Path
    api_url: str
    metrics_url: str
    api_key: str = ""
    token: str = ""
    mqtt_url: str = ""
    database_url: str = ""
    banner: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        timeout: float = 120.0,
        api_port: int | None = None,
        metrics_port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> Pipeline:
        """``hivepipe up`` in ``workdir``; returns once it printed its banner. ``settings``:
        ``HIVEPIPE_*`` variables of its own (``HIVEPIPE_WORKERS``...)."""
        api_port = api_port or embedded.free_port()
        metrics_port = metrics_port or embedded.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEPIPE_")}
        data_dir = workdir / "data"
        env |= {
            "HIVEPIPE_DATA_DIR": str(data_dir),
            "HIVEPIPE_API_PORT": str(api_port),
            "HIVEPIPE_SUPERVISOR_METRICS_PORT": str(metrics_port),
            **(settings or {}),
        }
        log_path = workdir / "hivepipe-up.log"
        with log_path.open("a") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.entrypoints.cli", "up"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        pipeline = cls(
            proc,
            data_dir,
            log_path,
            api_url=f"http://127.0.0.1:{api_port}",
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        )
        threading.Thread(target=pipeline._read_banner, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any(line.startswith("Kafka:") for line in pipeline.banner):
            if proc.poll() is not None or time.monotonic() > deadline:
                pipeline.stop()
                raise RuntimeError(f"hivepipe up did not start:\n{pipeline.log()[-4000:]}")
            time.sleep(0.1)
        fields = dict(line.split(": ", 1) for line in pipeline.banner if ": " in line)
        pipeline.api_key = fields["API key"]
        pipeline.token = fields["Callback token"]
        pipeline.mqtt_url = fields["MQTT"]
        pipeline.database_url = json.loads((data_dir / "urls.json").read_text())["database_url"]
        return pipeline

    def _read_banner(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.banner.append(line.strip())

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def children(self, what: str) -> list[int]:
        """The pids of the supervisor's children that are ``what`` (a key of CHILDREN)."""
        return sorted(pid for pid, cmd in children_of(self.proc.pid) if CHILDREN[what] in cmd)

    def kill(self, what: str) -> int:
        """kill -9 of one ``what`` (the first API process, say); returns its pid."""
        pids = self.children(what)
        assert pids, f"no {what} process under hivepipe up"
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def power_cut(self) -> None:
        """kill -9 of the whole tree at once, the supervisor included (a power cut, as far as
        the processes can tell: what the OS had not written is the disk's business). The tree
        is read from one pass over ``/proc`` and stopped (SIGSTOP) before it is killed, so that
        every process dies at the same instant: a pass over ``/proc`` per process took about a
        second on a busy machine, and the servers kept answering meanwhile."""
        parents: dict[int, list[int]] = {}
        for pid, ppid, _ in _processes():
            parents.setdefault(ppid, []).append(pid)
        tree, todo = [self.proc.pid], [self.proc.pid]
        while todo:
            found = parents.get(todo.pop(), [])
            tree += found
            todo += found
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in tree:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        self.proc.wait()

    def start_again(self) -> None:
        """``hivepipe up`` again on the same data directory and ports (``make run`` after a
        crash); this object then stands for the new tree."""
        workdir = self.log_path.parent
        api_port = int(self.api_url.rsplit(":", 1)[1])
        metrics_port = int(self.metrics_url.rsplit(":", 1)[1].split("/", 1)[0])
        again = Pipeline.start(workdir, api_port=api_port, metrics_port=metrics_port)
        self.proc, self.banner = again.proc, again.banner
        self.mqtt_url, self.database_url = again.mqtt_url, again.database_url

    def restarts(self) -> dict[str, float]:
        """``hivepipe_role_restarts_total`` by role, from the supervisor's metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as answer:
            text = answer.read().decode()
        return {
            sample.labels["role"]: sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "hivepipe_role_restarts"
            for sample in family.samples
            if sample.name.endswith("_total")
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 90.0) -> None:
        """Ctrl-C, as an operator stops it; everything left after ``timeout`` is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                orphans = [pid for pid, _ in children_of(self.proc.pid)]
                self.proc.kill()
                self.proc.wait()
                for pid in orphans:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
