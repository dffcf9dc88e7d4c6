"""The API with its database away: 503 ``database_unavailable`` within the request timeout,
never a 500 after the pool's 30 s; and it serves again once the database is back."""

from __future__ import annotations

import time
from pathlib import Path

from services.platform.db import REQUEST_TIMEOUT, migrate
from tests.api_support import api_settings, connect, make_account, running_api
from tests.conftest import drop_schema, new_schema
from tests.tcp_proxy import postgres_proxy


async def test_database_away_is_503_then_served_again(
    pg_server: str, kafka_server: str, tmp_path: Path
) -> None:
    name, url = new_schema(pg_server)
    try:
        async with await connect(url) as conn:
            await migrate(conn)  # type: ignore[arg-type]
        account = await make_account(url)
        with postgres_proxy(url) as (proxy, proxied):
            settings = api_settings(database_url=proxied, kafka=kafka_server, data_dir=tmp_path)
            async with running_api(settings) as api:
                assert (await api.client.get("/v1/devices", headers=account.headers)).is_success
                proxy.cut()
                # First on the pooled connection that broke, then waiting for a new one.
                for _ in range(2):
                    started = time.monotonic()
                    answer = await api.client.get("/v1/devices", headers=account.headers)
                    assert time.monotonic() - started < REQUEST_TIMEOUT + 3
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["error"]["code"] == "database_unavailable"
                    assert answer.headers["retry-after"] == "5"
                ready = await api.client.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["error"]["code"] == "not_ready"
                assert ready.json()["error"]["checks"]["database"] is False
                proxy.restore()
                deadline = time.monotonic() + 20
                while True:
                    answer = await api.client.get("/v1/devices", headers=account.headers)
                    if answer.status_code == 200 or time.monotonic() > deadline:
                        break
                assert answer.status_code == 200, answer.text
                assert (await api.client.get("/readyz")).json()["status"] == "ok"
    finally:
        drop_schema(pg_server, name)
