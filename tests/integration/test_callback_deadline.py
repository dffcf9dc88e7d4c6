"""A frozen database (a server that hangs, as under SIGSTOP): callbacks are answered 503
``pipeline_timeout`` within ``callback_deadline``, never after the network has given up; once
the database answers again, the retry of the same uplink is accepted and the uplink is stored
once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from services.platform.db import migrate
from tests.api_support import api_settings, connect, make_account, running_api
from tests.conftest import drop_schema, new_schema
from tests.tcp_proxy import postgres_proxy

DEADLINE = 1.5


async def test_a_frozen_database_is_a_503_within_the_deadline(
    pg_server: str, kafka_server: str, tmp_path: Path
) -> None:
    name, url = new_schema(pg_server)
    try:
        async with await connect(url) as conn:
            await migrate(conn)  # type: ignore[arg-type]
        account = await make_account(url)
        with postgres_proxy(url) as (proxy, proxied):
            settings = api_settings(
                database_url=proxied,
                kafka=kafka_server,
                data_dir=tmp_path,
                callback_deadline=DEADLINE,
            )
            async with running_api(settings) as api:
                created = await api.client.post(
                    "/v1/devices",
                    json={"id": "FA11ED", "model": "orbit-t"},
                    headers=account.headers,
                )
                assert created.status_code == 201, created.text
                body = {
                    "device": "FA11ED",
                    "time": 1700000000,
                    "data": "010f08fc0906",
                    "seqNumber": 7,
                }
                headers = {"X-Callback-Token": settings.token}
                proxy.freeze()
                try:
                    started = time.monotonic()
                    answer = await api.client.post("/callbacks/sigfox", json=body, headers=headers)
                    waited = time.monotonic() - started
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["error"]["code"] == "pipeline_timeout"
                    assert waited < DEADLINE + 1.0
                finally:
                    proxy.thaw()
                # The network retries: accepted now (or a duplicate of the first attempt, which
                # went through once the database answered).
                deadline = time.monotonic() + 20
                while True:
                    retry = await api.client.post("/callbacks/sigfox", json=body, headers=headers)
                    if retry.status_code == 204 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                assert retry.status_code == 204, retry.text
        async with await connect(url) as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM uplink_dedup WHERE key LIKE %s", ("%FA11ED%",)
            )
            row = await cur.fetchone()
            assert row is not None
            assert row["n"] == 1
    finally:
        drop_schema(pg_server, name)
