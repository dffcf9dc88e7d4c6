"""Kafka stopped and restarted under traffic: callbacks answer 503 (nothing is lost: the network
retries), then flow again on the same API, with the topics re-created as configured."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.entrypoints import embedded
from tests.conftest import drop_schema, new_schema
from tests.integration.ingest_support import (
    api_server,
    metric,
    prepare,
    register_devices,
    run_async,
    sample,
    wait_for_messages,
)
from tests.stack import stack_settings


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
        return len(description["partitions"])
    finally:
        await admin.close()


def test_kafka_outage_answers_503_then_flows_again(pg_server: str, tmp_path: Path) -> None:
    port = embedded.free_port()
    kafka = embedded.start_kafka(tmp_path, port=port)
    schema, url = new_schema(pg_server)
    try:
        settings = stack_settings(
            database_url=url,
            kafka=kafka.url,
            mqtt_url=None,
            prefix=f"o{uuid.uuid4().hex[:8]}.",
            data_dir=tmp_path,
        )
        prepare(settings)  # topics with 2 partitions (the broker's default is 4)
        register_devices(url, [("1A2B3C", "orbit-t", True)])
        uplinks = settings.topic("uplinks")
        with api_server(settings) as base, httpx.Client(base_url=base, timeout=20) as client:

            def send(seq: int) -> httpx.Response:
                body = {**sample("sigfox-uplink.json"), "seqNumber": seq}
                return client.post(
                    "/callbacks/sigfox", json=body, headers={"X-Callback-Token": settings.token}
                )

            assert send(1).status_code == 204
            kafka.stop(timeout=0.5)  # tansu lingers 5s on SIGTERM: killed then
            started = time.monotonic()
            answer = send(2)
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "kafka_unavailable"
            assert time.monotonic() - started < 8
            # Later calls fail fast (the topic check is refused at once), and so do their retries.
            started = time.monotonic()
            assert send(2).status_code == 503
            assert send(3).status_code == 503
            assert time.monotonic() - started < 3

            kafka = embedded.start_kafka(tmp_path, port=port)  # memory storage: empty again
            duplicates = metric("hivepipe_uplinks_duplicate_total", source="sigfox")
            assert send(2).status_code == 204  # the claim was released: not a duplicate
            assert send(3).status_code == 204
            assert metric("hivepipe_uplinks_duplicate_total", source="sigfox") == duplicates
            found = wait_for_messages(
                kafka.url, uplinks, lambda v: v["meta"]["seq"] in (2, 3), count=2
            )
            # At least once: a send abandoned with the 503 may still reach the broker later.
            assert {v["meta"]["seq"] for v in found} == {2, 3}
            # Re-created with the configured partitions, not auto-created by the first produce.
            assert run_async(lambda: _partitions(kafka.url, uplinks)) == settings.partitions
    finally:
        kafka.stop(timeout=0.5)
        drop_schema(pg_server, schema)


@pytest.mark.parametrize("path", ["/callbacks/ttn", "/callbacks/chirpstack?event=up"])
def test_database_failure_is_503_not_500(
    pg_server: str, kafka_server: str, tmp_path: Path, path: str
) -> None:
    schema, url = new_schema(pg_server)
    settings = stack_settings(
        database_url=url,
        kafka=kafka_server,
        mqtt_url=None,
        prefix=f"d{uuid.uuid4().hex[:8]}.",
        data_dir=tmp_path,
    )
    prepare(settings)
    name = "ttn-uplink.json" if "ttn" in path else "chirpstack-up.json"
    try:
        with api_server(settings) as base, httpx.Client(base_url=base, timeout=20) as client:
            # The database fails every statement of the callback under the running API.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER TABLE uplink_dedup RENAME TO uplink_dedup_away")
            answer = client.post(
                path, json=sample(name), headers={"X-Callback-Token": settings.token}
            )
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "database_unavailable"
    finally:
        drop_schema(pg_server, schema)
