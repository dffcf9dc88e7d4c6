"""``hivepipe up`` with the embedded Mosquitto: in ``on-receipt`` mode its roles learn where its
pid file is (the MQTT adapters ask it for saves), and the supervisor watches the adapters
(services/entrypoints/mqtt_saves.py); in the other modes neither."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from services.entrypoints.supervised import Supervised
from services.entrypoints.supervisor import mqtt_saves, start_servers, supervise_server
from services.platform import Settings

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="amqtt: no store")


def embedded_settings(tmp_path: Path, pg_server: str, kafka_server: str, **given: Any) -> Settings:
    """``hivepipe up``'s settings with the test's PostgreSQL and Kafka: only MQTT embedded
    unless ``mqtt_url`` is given."""
    return Settings(
        data_dir=tmp_path, database_url=pg_server, kafka=kafka_server, embedded=True, **given
    )


@pytest.mark.parametrize("save", ["on-receipt", "every-change", "every-second"])
def test_the_roles_learn_the_pid_file_in_on_receipt_mode_only(
    tmp_path: Path, pg_server: str, kafka_server: str, save: str
) -> None:
    install = start_servers(
        embedded_settings(tmp_path, pg_server, kafka_server, embedded_mqtt_save=save)
    )
    try:
        [broker] = install.servers
        assert broker.name == "mqtt"
        pid_file = tmp_path.resolve() / "mosquitto.pid"
        assert pid_file.read_text().split("\n")[0] == str(broker.pid)
        env = install.child_env()
        servers = [supervise_server(broker)]
        watch = mqtt_saves(install.settings, servers, [])
        try:
            if save == "on-receipt":
                assert install.settings.embedded_mqtt_pid_file == pid_file
                assert env["HIVEPIPE_EMBEDDED_MQTT_PID_FILE"] == str(pid_file)
                assert watch is not None
                assert watch.saves.save_now()  # the Mosquitto it started, found by its pid file
                assert watch.away()  # just started: adapters are connecting
            else:
                assert install.settings.embedded_mqtt_pid_file is None
                assert watch is None
        finally:
            if watch is not None:
                watch.stop()
    finally:
        install.stop_servers()


def test_no_saves_are_asked_of_a_broker_of_your_own(
    tmp_path: Path, pg_server: str, kafka_server: str, mqtt_server: str
) -> None:
    install = start_servers(
        embedded_settings(tmp_path, pg_server, kafka_server, mqtt_url=mqtt_server)
    )
    try:
        assert install.servers == []
        assert install.settings.embedded_mqtt_pid_file is None
        roles: list[Supervised] = []
        assert mqtt_saves(install.settings, [], roles) is None
    finally:
        install.stop_servers()
