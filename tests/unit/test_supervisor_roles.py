"""``hivepipe up``'s roles: how many of each it starts, their names, and each process's own
worker instance and MQTT client id (a fake spawn: no process is started); and its banner."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

import pytest

from services.entrypoints import roles
from services.entrypoints.roles import start_roles
from services.entrypoints.supervisor import banner
from services.platform.settings import Settings

_pids = itertools.count(4000)


class FakePopen:
    def __init__(self, role: str, env: dict[str, str], args: tuple[str, ...]) -> None:
        self.role, self.env, self.args = role, env, args
        self.pid = next(_pids)

    def poll(self) -> int | None:
        return None


class FakeSpawn:
    def __init__(self) -> None:
        self.started: list[FakePopen] = []

    def __call__(
        self,
        role: str,
        env: dict[str, str],
        *,
        args: tuple[str, ...] = (),
        pass_fds: tuple[int, ...] = (),
    ) -> FakePopen:
        self.started.append(FakePopen(role, env, args))
        return self.started[-1]


def _start(mqtt_shared: bool = True, **settings: Any) -> tuple[list[Any], FakeSpawn]:
    spawn = FakeSpawn()
    with socket.socket() as api:
        started = start_roles(
            Settings(embedded=True, **settings),
            {"HIVEPIPE_EMBEDDED": "true"},
            api,
            mqtt_shared=mqtt_shared,
            spawn=spawn,  # type: ignore[arg-type]
        )
    return started, spawn


def test_each_role_starts_its_count_each_supervised_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    started, spawn = _start(workers=3, mqtt_adapters=2, api_processes=2)
    assert [(child.name, child.role) for child in started] == [
        ("worker-1", "worker"),
        ("worker-2", "worker"),
        ("worker-3", "worker"),
        ("mqtt-1", "mqtt"),
        ("mqtt-2", "mqtt"),
        ("api-1", "api"),
        ("api-2", "api"),
    ]
    assert [p.role for p in spawn.started] == ["worker"] * 3 + ["mqtt"] * 2 + ["api"] * 2
    assert len({child.process.pid for child in started}) == 7  # one process each
    instances = [p.env["HIVEPIPE_WORKER_INSTANCE"] for p in spawn.started if p.role == "worker"]
    assert instances == ["box-worker-1", "box-worker-2", "box-worker-3"]
    client_ids = [p.env["HIVEPIPE_MQTT_CLIENT_ID"] for p in spawn.started if p.role == "mqtt"]
    assert client_ids == ["hivepipe-ingest-box", "hivepipe-ingest-box-2"]
    assert all(p.args[0] == "--fd" for p in spawn.started if p.role == "api")


def test_the_defaults_are_one_worker_one_adapter_two_api_processes() -> None:
    started, spawn = _start()
    assert [child.name for child in started] == ["worker-1", "mqtt-1", "api-1", "api-2"]
    (worker,) = (p for p in spawn.started if p.role == "worker")
    assert worker.env["HIVEPIPE_WORKER_INSTANCE"] == f"{socket.gethostname()}-worker-1"


def test_a_configured_instance_and_client_id_stay_distinct_per_process() -> None:
    _, spawn = _start(workers=2, mqtt_adapters=2, worker_instance="w", mqtt_client_id="ingest")
    instances = [p.env["HIVEPIPE_WORKER_INSTANCE"] for p in spawn.started if p.role == "worker"]
    assert instances == ["w", "w-2"]
    client_ids = [p.env["HIVEPIPE_MQTT_CLIENT_ID"] for p in spawn.started if p.role == "mqtt"]
    assert client_ids == ["ingest", "ingest-2"]


def test_without_shared_subscriptions_one_adapter_runs_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, _ = _start(mqtt_shared=False, mqtt_adapters=3)
    assert [child.name for child in started if child.role == "mqtt"] == ["mqtt-1"]
    assert "no shared subscriptions" in caplog.text


def test_an_unreachable_broker_is_taken_for_one_without_shared_subscriptions() -> None:
    settings = Settings(embedded=True, mqtt_url="mqtt://127.0.0.1:1")
    assert roles.mqtt_shares_subscriptions(settings) is False


@pytest.mark.parametrize(
    ("processes", "configured", "used"),
    [
        (2, "memory://", "postgresql://"),  # the default: shared without configuration
        (3, "async+memory://", "postgresql://"),
        (1, "memory://", "memory://"),  # one process: no round trip per request
        (2, "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (2, "postgresql://", "postgresql://"),
    ],
)
def test_several_api_processes_count_rate_limits_together(
    processes: int, configured: str, used: str
) -> None:
    _, spawn = _start(api_processes=processes, rate_limit_storage=configured)
    storages = {p.env["HIVEPIPE_RATE_LIMIT_STORAGE"] for p in spawn.started if p.role == "api"}
    assert storages == {used}


def test_the_banner_keeps_the_lines_scripts_read(tmp_path: Path) -> None:
    started, _ = _start(workers=2)
    settings = Settings(
        embedded=True,
        data_dir=tmp_path,
        callback_token="t" * 20,
        mqtt_url="mqtt://127.0.0.1:1883",
        kafka="127.0.0.1:9092",
    )
    lines = banner(settings, "KEY", started, took=12.34, complete=True)
    assert lines[0] == (
        "hivepipe is ready after 12.3 s: 2 API processes, 2 workers, 1 MQTT adapter"
    )
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields == {
        "API": "http://127.0.0.1:8080",
        "API key": "KEY",
        "Callback token": "t" * 20,
        "MQTT": "mqtt://127.0.0.1:1883",
        "Kafka": "127.0.0.1:9092",
        "Data": str(tmp_path.resolve()),
        "Stop": "Ctrl-C (stops every role, then the servers)",
    }
    late = banner(settings, "KEY", started, took=60.0, complete=False)
    assert "not in their group" in late[0]
