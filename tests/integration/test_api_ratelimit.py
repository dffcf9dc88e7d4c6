"""Rate limits through the real API (memory storage) and across two limiters on a real Redis."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from api.ratelimit import AccountLimiter
from services.accounts.users import set_limits
from tests.api_support import Api, api_on_new_schema, connect, make_account

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    # The deployment's defaults as shipped: 60 per minute, 10,000 per day.
    async with api_on_new_schema(
        pg_server,
        kafka=kafka_server,
        data_dir=tmp_path_factory.mktemp("ratelimit"),
        rate_limit_per_minute=60,
    ) as running:
        yield running


async def test_sixty_per_minute_then_429_with_headers_and_body(api: Api) -> None:
    account = await make_account(api.database_url, scopes=("read-only",))
    started = time.time()
    for i in range(60):
        answer = await api.client.get("/v1/devices", headers=account.headers)
        assert answer.status_code == 200, (i, answer.text)
        assert answer.headers["X-RateLimit-Limit"] == "60"
        assert answer.headers["X-RateLimit-Remaining"] == str(59 - i)
        reset = int(answer.headers["X-RateLimit-Reset"])
        assert started + 55 <= reset <= time.time() + 61
    refused = await api.client.get("/v1/devices", headers=account.headers)
    assert refused.status_code == 429
    body = refused.json()["error"]
    assert body["code"] == "rate_limited"
    assert isinstance(body["message"], str)
    assert 1 <= body["retry_after"] <= 60
    assert refused.headers["Retry-After"] == str(body["retry_after"])
    assert refused.headers["X-RateLimit-Limit"] == "60"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" in refused.headers
    # Errors after admission carry the headers too; an unknown route is not counted.
    await set_limits_of(api, account.username, per_minute=1000)
    missing = await api.client.get("/v1/devices/NOPE", headers=account.headers)
    assert missing.status_code == 404
    assert "X-RateLimit-Remaining" in missing.headers


async def set_limits_of(
    api: Api, username: str, *, per_minute: int | None = None, per_day: int | None = None
) -> None:
    async with await connect(api.database_url) as conn:
        await set_limits(conn, username=username, per_minute=per_minute, per_day=per_day)


async def test_an_integrator_and_its_users_share_one_account(api: Api) -> None:
    integrator = await make_account(api.database_url, integrator=True)
    user = await make_account(
        api.database_url, f"{integrator.username}-u", parent=integrator.username
    )
    await set_limits_of(api, integrator.username, per_minute=4)
    for headers in (integrator.headers, user.headers, integrator.headers, user.headers):
        assert (await api.client.get("/v1/devices", headers=headers)).status_code == 200
    assert (await api.client.get("/v1/devices", headers=user.headers)).status_code == 429
    assert (await api.client.get("/v1/devices", headers=integrator.headers)).status_code == 429
    # Another account is not affected.
    stranger = await make_account(api.database_url)
    assert (await api.client.get("/v1/devices", headers=stranger.headers)).status_code == 200


async def test_per_account_override_and_the_day_window(api: Api) -> None:
    account = await make_account(api.database_url)
    await set_limits_of(api, account.username, per_minute=100, per_day=3)
    answers = [await api.client.get("/v1/devices", headers=account.headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"  # the window closest to its limit
    assert answers[3].headers["X-RateLimit-Limit"] == "3"
    assert answers[3].json()["error"]["retry_after"] > 3600  # the day window


async def test_callbacks_health_and_docs_are_not_limited(api: Api) -> None:
    account = await make_account(api.database_url)
    await set_limits_of(api, account.username, per_minute=1)
    assert (await api.client.get("/v1/devices", headers=account.headers)).status_code == 200
    assert (await api.client.get("/v1/devices", headers=account.headers)).status_code == 429
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        for _ in range(3):
            answer = await api.client.get(path, headers=account.headers)
            assert answer.status_code == 200, path
            assert "X-RateLimit-Limit" not in answer.headers
    for _ in range(70):
        callback = await api.client.post(
            "/callbacks/sigfox", json={}, headers={"X-Callback-Token": "wrong"}
        )
        assert callback.status_code == 401  # refused by the token, never by volume
    # Unauthenticated requests are 401, not counted against anyone.
    assert (await api.client.get("/v1/devices")).status_code == 401


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis server on 127.0.0.1:6379")
async def test_two_api_processes_share_counters_in_redis() -> None:
    # Two limiters = two API processes; a random account id keeps runs apart.
    account = 10**12 + uuid.uuid4().int % 10**9
    first = AccountLimiter(REDIS, per_minute=5, per_day=1000)
    second = AccountLimiter(REDIS, per_minute=5, per_day=1000)
    decisions = [await (first if i % 2 else second).hit(account) for i in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[4].window is not None
    assert decisions[4].window.remaining == 0
    assert decisions[5].window is not None
    assert decisions[5].window.retry_after() <= 60
    # The override is per call (from the account's row).
    assert (await first.hit(account, per_minute=50)).allowed
