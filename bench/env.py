"""The system under benchmark: embedded servers (or configured ones), the API and worker roles
as real child processes, exactly as ``hivepipe up`` runs them."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.entrypoints.roles import api_answers, spawn_role, stop_process
from services.entrypoints.supervisor import Installation, prepare, start_servers
from services.platform.settings import Settings


@dataclass
class Running:
    install: Installation
    api_key: str
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def settings(self) -> Settings:
        return self.install.settings

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def pids(self, *, mqtt: bool = False) -> dict[str, int]:
        """The pipeline's processes by name: its roles and its embedded servers (``tansu``,
        ``postgres``; ``mqtt`` only when asked: it is not on the callbacks' path)."""
        pids = {role: proc.pid for role, proc in self.procs.items()}
        for server in self.install.servers:
            if server.name != "mqtt" or mqtt:
                pids[{"kafka": "tansu"}.get(server.name, server.name)] = server.pid
        return pids


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (``timeout``, a cancelled job) ends the run as Ctrl-C does, through the
    ``finally`` blocks that stop the embedded servers: they run in sessions of their own and
    outlived a terminated bench before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running_pipeline(
    *, roles: tuple[str, ...] = ("worker", "api"), api_processes: int = 1, **overrides: object
) -> Iterator[Running]:
    """``api_processes`` > 1: that many API processes on one listening socket, as ``hivepipe
    up`` runs them (named ``api``, ``api-2``, ...)."""
    import asyncio

    # The API's socket is bound first and held: a port only found free, then bound when the
    # API starts, was once taken meanwhile by a client connection's ephemeral port.
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
    with (
        _terminate_as_exit(),
        tempfile.TemporaryDirectory(prefix="hivepipe-bench-") as tmp,
        listener,
    ):
        settings = Settings(
            data_dir=Path(os.environ.get("HIVEPIPE_BENCH_DIR", tmp)),
            api_port=listener.getsockname()[1],
            topic_prefix="bench.",
            embedded=True,
            **overrides,  # type: ignore[arg-type]
        )
        install = start_servers(settings)
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            key = asyncio.run(prepare(install.settings))
            env = install.child_env()
            env["HIVEPIPE_LOG_LEVEL"] = "warning"
            # The bench is one account sending far more than an operator would.
            env["HIVEPIPE_RATE_LIMIT_PER_MINUTE"] = str(10**9)
            env["HIVEPIPE_RATE_LIMIT_PER_DAY"] = str(10**9)
            for name, value in overrides.items():
                env[f"HIVEPIPE_{name.upper()}"] = str(value)
            for role in roles:
                if role == "api":  # on the socket bound above, as `hivepipe up` runs the API
                    fd = listener.fileno()
                    for n in range(api_processes):
                        name = "api" if n == 0 else f"api-{n + 1}"
                        procs[name] = spawn_role(role, env, args=("--fd", str(fd)), pass_fds=(fd,))
                    continue
                procs[role] = spawn_role(role, env)
            listener.close()  # the API processes hold it
            if "api" in procs:
                # The socket accepts before any process is ready: wait for an answer.
                deadline = time.monotonic() + 60
                while not api_answers(install.settings):
                    assert procs["api"].poll() is None, "the API process exited"
                    assert time.monotonic() < deadline, "the API processes did not answer"
                    time.sleep(0.2)
            yield Running(install, key, procs)
        finally:
            for proc in procs.values():
                stop_process(proc)
            install.stop_servers()


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}){mem}, {system}, Python {sys.version.split()[0]}"
