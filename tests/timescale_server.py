"""Start and stop the PGlite + TimescaleDB server (``deploy/pglite``) for the ``timescale`` tier.

Usable from a pytest fixture::

    @pytest.fixture(scope="session")
    def timescale_url():
        try:
            server = start_server()
        except TimescaleUnavailable as exc:
            pytest.skip(str(exc))
        yield server.url
        server.stop()

The server is a Node process serving one in-memory PGlite database (TimescaleDB created and
loaded) over the PostgreSQL wire protocol. PGlite has one backend: one client connection at a time.
Clients must not ask for TLS (``sslmode=disable`` is in the URL) and should pass
``prepare_threshold=None`` to psycopg.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

PGLITE_DIR = Path(__file__).resolve().parent.parent / "deploy" / "pglite"
_MARKER = PGLITE_DIR / "node_modules" / "@electric-sql" / "pglite-socket" / "package.json"


class TimescaleUnavailable(RuntimeError):
    """Node/npm is missing or the node dependencies cannot be installed: skip, do not fail."""


@dataclass
class TimescaleServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def ensure_node_modules(directory: Path = PGLITE_DIR) -> None:
    """Install the node dependencies of ``deploy/pglite`` unless they are already there."""
    if not shutil.which("node"):
        raise TimescaleUnavailable("node is not installed (needed for the PGlite TimescaleDB tier)")
    if (directory / _MARKER.relative_to(PGLITE_DIR)).exists():
        return
    npm = shutil.which("npm")
    if not npm:
        raise TimescaleUnavailable("npm is not installed (needed for the PGlite TimescaleDB tier)")
    verb = "ci" if (directory / "package-lock.json").exists() else "install"
    cmd = [npm, verb, "--legacy-peer-deps", "--no-audit", "--no-fund"]
    done = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise TimescaleUnavailable(f"`npm {verb}` in {directory} failed:\n{done.stderr[-2000:]}")


def start_server(*, timeout: float = 60.0, directory: Path = PGLITE_DIR) -> TimescaleServer:
    """Start the server on a free 127.0.0.1 port and wait until TimescaleDB answers."""
    ensure_node_modules(directory)
    node = shutil.which("node")
    assert node is not None
    fd, log_name = tempfile.mkstemp(prefix="pglite-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(fd, "wb") as log_file:
        # Port 0: the server binds a free port and prints it, so there is no race for the port.
        # stdin stays an open pipe: the server exits when it closes (if pytest dies abruptly).
        process = subprocess.Popen(
            [node, "server.mjs", "--host", "127.0.0.1", "--port", "0"],
            cwd=directory,
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = TimescaleServer(url="", process=process, log_path=log_path)
    try:
        port = _wait_ready(server, timeout)
        server.url = f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres?sslmode=disable"
        _check_extension(server.url)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def timescale_server(*, timeout: float = 60.0) -> Iterator[str]:
    """Context manager: yields the URL, stops the server on exit."""
    server = start_server(timeout=timeout)
    try:
        yield server.url
    finally:
        server.stop()


def connect(url: str, *, retry_for: float = 5.0) -> psycopg.Connection[tuple[object, ...]]:
    """A synchronous autocommit connection with the options PGlite needs.

    Retries briefly: the server notices a closed client asynchronously, and until then it refuses
    a new connection (one at a time), so a connect right after a close may be turned away.
    """
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=10)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def aconnect(
    url: str, *, retry_for: float = 5.0
) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """The async twin of :func:`connect`."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return await psycopg.AsyncConnection.connect(
                url, autocommit=True, prepare_threshold=None, connect_timeout=10
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _wait_ready(server: TimescaleServer, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log().splitlines():
            if line.startswith("READY "):
                return int(json.loads(line[len("READY ") :])["port"])
        if server.process.poll() is not None:
            raise RuntimeError(
                f"PGlite server exited with {server.process.returncode}:\n{server.log()[-2000:]}"
            )
        time.sleep(0.1)
    raise TimeoutError(f"PGlite server not ready after {timeout}s:\n{server.log()[-2000:]}")


def _check_extension(url: str) -> None:
    with connect(url) as conn:
        # LOAD is per backend; PGlite has only one, which server.mjs already prepared. Repeating it
        # here is harmless and makes the launcher correct for any server script.
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute("LOAD 'timescaledb'")
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        if row is None:
            raise RuntimeError("timescaledb extension missing on the PGlite server")
