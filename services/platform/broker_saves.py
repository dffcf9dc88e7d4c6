"""Asking the embedded Mosquitto to save its store now (SIGUSR1, its documented signal for it).

Mosquitto 2.0 acknowledges a QoS 1 publish to the device first and writes its store later.
With ``autosave_on_changes`` it saves at the next turn of its loop after a *change*, but a
message handed at once to a connected subscriber (the MQTT adapter) is no change; the
subscriber's PUBACK of it is one. It reads one packet per turn, so at 500 messages/s it
rewrote and fsync'd its whole store 500 times a second, once per PUBACK of the adapter, while
a message the adapter held unacknowledged (its linger, or a database or Kafka outage) was on
disk only if some PUBACK happened to come meanwhile (docs/operations.md).

In ``on-receipt`` mode (``HIVEPIPE_EMBEDDED_MQTT_SAVE``, the default) Mosquitto saves once a
second by itself, and whenever it is asked to:

- by the MQTT adapter, when it has received messages: at once, then at most once per
  ``HIVEPIPE_EMBEDDED_MQTT_SAVE_DELAY_MS`` (:class:`SaveSoon`);
- by ``hivepipe up`` as each message comes while an adapter is away (dead, restarting,
  reconnecting): what devices publish is then queued for its session
  (``services/entrypoints/mqtt_saves.py``).

Mosquitto 2.0 blocks its signals while it waits for its sockets (up to 100 ms when idle) and
saves at the turn of its loop after one came; so each request is followed by a PINGREQ on a
connection of the requester's own (:class:`Waker`), which ends that wait: the last message of
a burst is saved within milliseconds too, not up to 100 ms later.

``hivepipe up`` writes the pid file (the pid, then the path of the configuration file Mosquitto
was started with): a process is signalled only if its command line names that file, so a stale
file never signals another process that took the pid over. Linux only (``/proc``); elsewhere
no signal is sent and Mosquitto saves once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import time
import uuid
from pathlib import Path

from prometheus_client import Counter

from services.platform.mqtt_address import parse_mqtt_url

log = logging.getLogger(__name__)

#: ``socket.TCP_QUICKACK`` where Python has it (Linux), else a no-op option.
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", socket.TCP_NODELAY)

SAVE_REQUESTS = Counter(
    "hivepipe_mqtt_broker_save_requests_total",
    "Saves of its store asked of the embedded Mosquitto (SIGUSR1)",
)


def write_pid_file(path: Path, pid: int, conf: Path) -> None:
    """Record the embedded Mosquitto's pid and the configuration file it was started with (as
    its command line names it)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(f"{pid}\n{conf}\n")
    tmp.replace(path)


def _started_with(pid: int, conf: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return conf.encode() in cmdline.split(b"\0")


class BrokerSaves:
    """Sends SIGUSR1 to the Mosquitto that ``pid_file`` names (read again once it has gone:
    ``hivepipe up`` relaunches it under a new pid). Never raises."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self._pidfd: int | None = None
        self._pid: int | None = None
        self._conf = ""
        self._warned = False

    def save_now(self) -> bool:
        """Ask for a save; False when there is no such Mosquitto running (or no permission)."""
        for _ in range(2):
            if self._pid is None and not self._find():
                return False
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGUSR1)
                else:  # no pidfd: check the command line each time
                    assert self._pid is not None
                    if not self._matches(self._pid):
                        raise ProcessLookupError(self._pid)
                    os.kill(self._pid, signal.SIGUSR1)
            except ProcessLookupError:
                self.close()  # gone (relaunched?): read the pid file again
                continue
            except PermissionError as exc:
                if not self._warned:
                    self._warned = True
                    log.warning("cannot ask Mosquitto (pid %s) to save: %s", self._pid, exc)
                return False
            SAVE_REQUESTS.inc()
            return True
        return False

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._pidfd = self._pid = None

    def _matches(self, pid: int) -> bool:
        return bool(self._conf) and _started_with(pid, self._conf)

    def _find(self) -> bool:
        if not Path("/proc/self/cmdline").exists():
            if not self._warned:
                self._warned = True
                log.warning("no /proc here: Mosquitto saves its store once a second only")
            return False
        try:
            pid_text, conf = self.pid_file.read_text().split("\n")[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            return False
        self._conf = conf
        if not self._matches(pid):
            return False
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                fd = pidfd_open(pid)
            except OSError:
                return False
            # The pid could have been taken over between the check and the open: check again,
            # now that the descriptor holds the process.
            if not self._matches(pid):
                os.close(fd)
                return False
            self._pidfd = fd
        self._pid = pid
        return True


class SaveSoon:
    """The adapter's side: :meth:`request` on receiving messages asks for a save at once if
    none was asked for within ``delay`` seconds, else once ``delay`` has passed since the last
    (one pending at most), then pings with ``waker``. Call from the event loop; :meth:`close`
    closes ``saves`` and ``waker``."""

    def __init__(self, saves: BrokerSaves, delay: float, *, waker: Waker | None = None) -> None:
        self.saves = saves
        self.delay = delay
        self.waker = waker
        self._last = -float("inf")
        self._pending: asyncio.TimerHandle | None = None

    def request(self) -> None:
        if self._pending is not None:
            return
        wait = self._last + self.delay - time.monotonic()
        if wait <= 0:
            self._fire()
        else:
            self._pending = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._last = time.monotonic()
        if self.saves.save_now() and self.waker is not None:
            self.waker.ping()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self.saves.close()
        if self.waker is not None:
            self.waker.close()


class Waker:
    """A bare MQTT 3.1.1 connection of its own to the broker (clean session, keep-alive off):
    :meth:`ping` sends a PINGREQ, which ends Mosquitto's wait for its sockets. With
    ``subscribe``, it also subscribes to every topic (``#``, QoS 0) and :meth:`published`
    counts what is published (``hivepipe up`` while an adapter is away). It connects when
    first used and after a failure; :meth:`close` while not needed. Not thread-safe."""

    def __init__(self, url: str, *, subscribe: bool = False, timeout: float = 0.2) -> None:
        address = parse_mqtt_url(url)
        self.host, self.port = address.host, address.port
        self.subscribe = subscribe
        self.timeout = timeout
        self.client_id = f"hivepipe-saves-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sock: socket.socket | None = None
        self._buffer = b""

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def ping(self) -> bool:
        try:
            sock = self._connected()
            sock.sendall(b"\xc0\x00")  # PINGREQ
            if not self.subscribe:
                with contextlib.suppress(BlockingIOError):
                    sock.recv(4096)  # the PINGRESPs so far
        except OSError:
            self.close()  # relaunched, or not up yet: connect again at the next use
            return False
        return True

    def published(self, within: float) -> int:
        """The messages published (to any topic) within ``within`` s, or since the last call
        (0 as soon as something else came); -1 when the broker cannot be reached."""
        try:
            sock = self._connected()
            if not select.select([sock], [], [], within)[0]:
                return 0
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("the broker closed the connection")
            # Acknowledge at once (Linux resets it after each read): a broker that waits for
            # the acknowledgement before it sends more (Nagle) sends the next message now.
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except (OSError, ValueError):
            self.close()
            return -1
        self._buffer += data
        count = 0
        while (packet := _next_packet(self._buffer)) is not None:
            kind, size = packet
            self._buffer = self._buffer[size:]
            count += kind == 3  # PUBLISH
        return count

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendall(b"\xe0\x00")  # DISCONNECT
            self._sock.close()
            self._sock = None
            self._buffer = b""

    def _connected(self) -> socket.socket:
        if self._sock is None:
            self._sock = self._connect()
        return self._sock

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            # A PINGREQ leaves at once, not after the broker has acknowledged the last one.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_id = self.client_id.encode()
            body = (
                b"\x00\x04MQTT\x04\x02\x00\x00"  # MQTT 3.1.1, clean session, no keep-alive
                + len(client_id).to_bytes(2, "big")
                + client_id
            )
            sock.sendall(bytes([0x10, len(body)]) + body)
            if _read_exactly(sock, 4) != b"\x20\x02\x00\x00":
                raise ConnectionRefusedError("the broker refused the connection")
            if self.subscribe:
                # SUBSCRIBE, packet id 1, "#" at QoS 0; then its SUBACK.
                sock.sendall(b"\x82\x06\x00\x01\x00\x01#\x00")
                if _read_exactly(sock, 5)[:1] != b"\x90":
                    raise ConnectionRefusedError("the broker refused the subscription")
            sock.setblocking(False)  # a ping never waits on the broker
        except BaseException:
            sock.close()
            raise
        return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the broker closed the connection")
        data += chunk
    return data


def _next_packet(buffer: bytes) -> tuple[int, int] | None:
    """The type and the whole size of the MQTT packet at the start of ``buffer`` (None while
    it is incomplete)."""
    length, multiplier = 0, 1
    for i in range(1, min(len(buffer), 5)):
        byte = buffer[i]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            size = i + 1 + length
            return (buffer[0] >> 4, size) if len(buffer) >= size else None
        multiplier *= 128
    if len(buffer) >= 5:
        raise ValueError("malformed MQTT packet length")
    return None
