"""The role processes ``hivepipe up`` runs: how one is started (``python -m
services.entrypoints.cli <role>``), stopped and killed, the API's shared listening socket, and
how the supervisor tells that the API answers and the workers have joined their group; how many
of each role it starts, and under which names."""

from __future__ import annotations

import http.client
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from services.entrypoints.embedded import free_port
from services.entrypoints.supervised import Supervised
from services.platform import Settings

log = logging.getLogger(__name__)


ROLES: dict[str, list[str]] = {
    "worker": ["worker"],
    "api": ["api"],
    "mqtt": ["ingest", "mqtt"],
}


def spawn_role(
    role: str, env: dict[str, str], *, args: tuple[str, ...] = (), pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start one role as ``python -m services.entrypoints.cli <role> [args]`` in its own process
    group (a Ctrl-C in the terminal reaches the supervisor alone), with ``pass_fds`` inherited."""
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "services.entrypoints.cli", *ROLES[role], *args],
        env=env,
        start_new_session=True,
        pass_fds=pass_fds,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class RoleProcess:
    """A role's running process, as :class:`~services.entrypoints.supervised.Supervised` sees it."""

    proc: subprocess.Popen[bytes]
    stop_timeout: float = 20.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        stop_process(self.proc, self.stop_timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def bind_api_socket(settings: Settings) -> socket.socket:
    """The API's listening socket, bound here once and inherited by every API process.

    One socket, so one accept queue: the connections a dying process had not accepted yet go to
    the others, and none is refused while it restarts (with one socket per process and
    SO_REUSEPORT, the kernel would reset those queued on the dead one's)."""
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    return socket.create_server((settings.api_host, settings.api_port), family=family, backlog=2048)


def api_answers(settings: Settings) -> bool:
    """Whether an API process answers ``GET /healthz`` (the shared socket accepts connections
    before any process is ready, so a connection alone proves nothing)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.api_host, settings.api_host)  # noqa: S104
    conn = http.client.HTTPConnection(host, settings.api_port, timeout=0.5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def worker_ready(settings: Settings, pid: int) -> bool:
    """Whether the worker of ``pid`` has joined its consumer group."""
    from stream import ready_file

    return ready_file(settings, pid).exists()


def worker_instance(settings: Settings, n: int) -> str:
    """The stable name of worker ``n`` in its consumer group: two running workers never share
    one (static membership would fence one of them out)."""
    if settings.worker_instance:
        return settings.worker_instance if n == 1 else f"{settings.worker_instance}-{n}"
    return f"{socket.gethostname()}-worker-{n}"


def mqtt_client_id(settings: Settings, n: int) -> str:
    """The client id of MQTT adapter ``n``: its own persistent session on the broker (the
    first keeps the id a single adapter always had, and with it its session)."""
    from ingest.mqtt import default_client_id

    base = default_client_id(settings)
    return base if n == 1 else f"{base}-{n}"


def mqtt_shares_subscriptions(settings: Settings) -> bool:
    """Whether the MQTT broker has shared subscriptions (several adapters split the load);
    False when it cannot be asked."""
    from ingest.mqtt import probe_broker
    from services.platform import parse_mqtt_url

    if not settings.mqtt_url:
        return False
    try:
        return probe_broker(parse_mqtt_url(settings.mqtt_url), timeout=5.0).shared
    except (OSError, ConnectionError, PermissionError) as exc:
        log.warning("could not ask the MQTT broker about shared subscriptions: %r", exc)
        return False


#: Where several API processes count rate limits together when none is configured: hivepipe's
#: own database (``services.accounts.rate_counters``).
SHARED_RATE_LIMITS = "postgresql://"


def api_rate_limit_storage(settings: Settings) -> str:
    """The rate-limit storage of the API processes: the configured one, except that several
    processes never count in their own memory each (an account would get N times its limits):
    they share hivepipe's PostgreSQL then. One process keeps its memory (no round trip)."""
    storage = settings.rate_limit_storage
    if settings.api_processes > 1 and storage.removeprefix("async+").startswith("memory"):
        return SHARED_RATE_LIMITS
    return storage


def metrics_port(configured: int | None, n: int) -> int:
    """Where worker (or MQTT adapter) ``n`` serves its metrics: the configured port for the
    first and the next ones for the others (two processes cannot share one), else a free one
    (``hivepipe status`` reads them all, from ``processes.json``)."""
    return configured + n - 1 if configured else free_port()


Spawn = Callable[..., subprocess.Popen[bytes]]


def start_roles(
    settings: Settings,
    env: dict[str, str],
    api: socket.socket,
    *,
    mqtt_shared: bool = True,
    spawn: Spawn = spawn_role,
) -> list[Supervised]:
    """``settings.workers`` workers first, then ``settings.mqtt_adapters`` MQTT adapters (one
    when the broker has no shared subscriptions: ``mqtt_shared`` False) and
    ``settings.api_processes`` API processes serving ``api``, each supervised on its own."""
    fd = api.fileno()
    api_env = {**env, "HIVEPIPE_RATE_LIMIT_STORAGE": api_rate_limit_storage(settings)}

    def api_process() -> RoleProcess:
        return RoleProcess(spawn("api", api_env, args=("--fd", str(fd)), pass_fds=(fd,)))

    def worker(n: int) -> Supervised:
        # A stable name in the consumer group: the worker started again takes its partitions
        # back at once (static membership) instead of waiting for the dead member's session
        # to expire.
        port = metrics_port(settings.worker_metrics_port, n)
        worker_env = {
            **env,
            "HIVEPIPE_WORKER_INSTANCE": worker_instance(settings, n),
            "HIVEPIPE_WORKER_METRICS_PORT": str(port),
        }
        return Supervised(
            f"worker-{n}",
            "worker",
            lambda: RoleProcess(spawn("worker", worker_env), 30.0),
            metrics_port=port,
        )

    def adapter(n: int) -> Supervised:
        port = metrics_port(settings.mqtt_metrics_port, n)
        adapter_env = {
            **env,
            "HIVEPIPE_MQTT_CLIENT_ID": mqtt_client_id(settings, n),
            "HIVEPIPE_MQTT_METRICS_PORT": str(port),
        }
        if adapters == 1:
            # Alone, the adapter subscribes plainly: Mosquitto restores a persistent session's
            # plain subscriptions after a restart but not its shared ones, and drops (after its
            # PUBACK) what devices publish before a shared subscriber is back.
            adapter_env["HIVEPIPE_MQTT_SHARE_GROUP"] = ""
        return Supervised(
            f"mqtt-{n}",
            "mqtt",
            lambda: RoleProcess(spawn("mqtt", adapter_env)),
            metrics_port=port,
        )

    adapters = settings.mqtt_adapters
    if adapters > 1 and not mqtt_shared:
        log.warning(
            "the MQTT broker has no shared subscriptions: running 1 MQTT adapter, not %d "
            "(each would receive every message)",
            adapters,
        )
        adapters = 1
    roles = [worker(n) for n in range(1, settings.workers + 1)]
    roles += [adapter(n) for n in range(1, adapters + 1)]
    roles += [
        Supervised(f"api-{n}", "api", api_process) for n in range(1, settings.api_processes + 1)
    ]
    if api_env["HIVEPIPE_RATE_LIMIT_STORAGE"] != settings.rate_limit_storage:
        log.info(
            "%d API processes count rate limits together in PostgreSQL (the rate_limits table)",
            settings.api_processes,
        )
    return roles
