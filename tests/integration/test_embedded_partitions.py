"""The embedded Kafka's partitions: one per worker unless ``HIVEPIPE_PARTITIONS`` says; a
configured Kafka keeps the setting (4 unless set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.entrypoints.supervisor import start_servers
from services.platform import Settings


@pytest.mark.parametrize(
    ("embedded_kafka", "given", "expected"),
    [
        (True, {"workers": 1}, 1),
        (True, {"workers": 3}, 3),
        (True, {"workers": 1, "partitions": 4}, 4),
        (False, {"workers": 1}, 4),
    ],
)
def test_partitions_follow_the_workers_on_the_embedded_kafka_only(
    tmp_path: Path,
    pg_server: str,
    kafka_server: str,
    mqtt_server: str,
    embedded_kafka: bool,
    given: dict[str, int],
    expected: int,
) -> None:
    kafka = None if embedded_kafka else kafka_server
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg_server,
        mqtt_url=mqtt_server,
        kafka=kafka,
        embedded=True,
        **given,
    )
    install = start_servers(settings)
    try:
        started = ["kafka"] if embedded_kafka else []
        assert [server.name for server in install.servers] == started
        assert install.settings.partitions == expected
        assert install.child_env()["HIVEPIPE_PARTITIONS"] == str(expected)
    finally:
        install.stop_servers()
