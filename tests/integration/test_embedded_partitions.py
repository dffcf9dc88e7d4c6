"""The embedded Kafka's partitions: one per worker unless ``HIVEPIPE_PARTITIONS`` says."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.entrypoints.supervisor import start_servers
from services.platform import Settings


@pytest.mark.parametrize(
    ("given", "expected"),
    [({"workers": 1}, 1), ({"workers": 3}, 3), ({"workers": 1, "partitions": 4}, 4)],
)
def test_embedded_kafka_gets_one_partition_per_worker(
    tmp_path: Path, pg_server: str, mqtt_server: str, given: dict[str, int], expected: int
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg_server,
        mqtt_url=mqtt_server,
        kafka=None,
        embedded=True,
        **given,
    )
    install = start_servers(settings)
    try:
        assert [server.name for server in install.servers] == ["kafka"]
        assert install.settings.partitions == expected
        assert install.child_env()["HIVEPIPE_PARTITIONS"] == str(expected)
    finally:
        install.stop_servers()


def test_a_configured_kafka_keeps_the_partitions_setting(
    tmp_path: Path, pg_server: str, kafka_server: str, mqtt_server: str
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg_server,
        kafka=kafka_server,
        mqtt_url=mqtt_server,
        embedded=True,
    )
    install = start_servers(settings)
    assert install.servers == []
    assert install.settings.partitions == 4
