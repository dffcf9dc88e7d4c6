"""Helpers for the API tests: the real app in-process (its lifespan, real servers), accounts
with keys, a recording HTTP server standing in for a LoRaWAN network server, and
:func:`bench_auth_overhead` for ``make bench``."""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI
from psycopg.rows import dict_row

from api.deps import PrincipalDep
from services.accounts.keys import issue_key, key_scopes
from services.accounts.users import add_user
from services.platform.settings import Settings
from tests.schemas import check as check_schema
from tests.stack import stack_settings


@dataclass
class Api:
    """The real app (lifespan running) and an in-process client."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def database_url(self) -> str:
        assert self.settings.database_url
        return self.settings.database_url

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    """``create_app(settings)`` with its lifespan, reached through an ASGI transport."""
    from services.entrypoints.api_app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app=app, client=client, settings=settings)


@asynccontextmanager
async def api_on_new_schema(
    pg_server: str, *, kafka: str, data_dir: Path, mqtt_url: str | None = None, **extra: object
) -> AsyncIterator[Api]:
    """A fresh migrated schema and the app on it (dropped afterwards)."""
    from services.platform.db import migrate
    from tests.conftest import drop_schema, new_schema

    name, url = new_schema(pg_server)
    try:
        async with await connect(url) as conn:
            await migrate(conn)  # type: ignore[arg-type]
        settings = api_settings(
            database_url=url, kafka=kafka, data_dir=data_dir, mqtt_url=mqtt_url, **extra
        )
        async with running_api(settings) as api:
            yield api
    finally:
        drop_schema(pg_server, name)


def api_settings(
    *,
    database_url: str,
    kafka: str,
    data_dir: Path,
    mqtt_url: str | None = None,
    **extra: object,
) -> Settings:
    """Test settings: a private topic prefix; limits high unless the test sets its own.

    Buffered stats are flushed by the tests themselves (``flush_buffers``), never on a timer,
    so a test can tell a flush from a write per request.
    """
    extra.setdefault("stats_flush_seconds", 3600.0)
    return stack_settings(
        database_url=database_url,
        kafka=kafka,
        mqtt_url=mqtt_url,
        prefix=f"a{uuid.uuid4().hex[:10]}.",
        data_dir=data_dir,
        **extra,
    )


async def connect(url: str) -> psycopg.AsyncConnection[dict[str, Any]]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


@dataclass
class Account:
    """A user with one key."""

    username: str
    key: str
    user_id: int
    integrator: bool
    scopes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


async def make_account(
    url: str,
    username: str | None = None,
    *,
    integrator: bool = False,
    parent: str | None = None,
    scopes: tuple[str, ...] = ("admin",),
    key_name: str = "main",
) -> Account:
    """Create a user (or integrator, or an integrator's user) and a key for it."""
    username = username or f"u{uuid.uuid4().hex[:8]}"
    async with await connect(url) as conn:
        row = await add_user(conn, username=username, is_integrator=integrator, parent=parent)
        granted = key_scopes(scopes, is_integrator=integrator)
        key, _ = await issue_key(conn, user_id=row["id"], name=key_name, scopes=granted)
    return Account(username, key, int(row["id"]), integrator, granted)


async def add_key(url: str, account: Account, name: str, scopes: tuple[str, ...]) -> str:
    """Another key for an existing account."""
    async with await connect(url) as conn:
        granted = key_scopes(scopes, is_integrator=account.integrator)
        key, _ = await issue_key(conn, user_id=account.user_id, name=name, scopes=granted)
    return key


# --- A recording HTTP server (a LoRaWAN network server stand-in) ----------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class RecordingServer:
    """A real HTTP server on 127.0.0.1 that records each request and answers ``reply``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply: tuple[int, Any] = (200, {})
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                recorder.requests.append(
                    Recorded(
                        method=self.command,
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=json.loads(raw) if raw else None,
                    )
                )
                status, body = recorder.reply
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_DELETE = do_GET = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- make bench: the cost of authentication + rate limiting --------------------------------


async def bench_auth_overhead(
    database_url: str | None = None, *, requests: int = 2000
) -> dict[str, float]:
    """What authentication + rate limiting add to a request, in microseconds (p50 and p95).

    ``direct_*``: the auth dependency's own work called directly: the key lookup through the
    pool (one index probe), the expiry/revoke checks, both rate-limit windows, the last_used and
    usage notes. ``http_*``: two otherwise identical routes through the whole ASGI stack, one
    behind the auth dependency; ``http_overhead_p50_us`` is the difference of their medians.
    ``database_url`` must point at a migrated database; without one, a fresh schema on the test
    server (``HIVEPIPE_TEST_DATABASE_URL``, else a private embedded PostgreSQL) is used::

        asyncio.run(bench_auth_overhead())
    """
    if database_url is None:
        from services.platform.db import migrate
        from tests.conftest import drop_schema, new_schema
        from tests.servers import server_url

        with server_url("database") as base:
            name, url = new_schema(base)
            try:
                async with await connect(url) as conn:
                    await migrate(conn)  # type: ignore[arg-type]
                return await bench_auth_overhead(url, requests=requests)
            finally:
                drop_schema(base, name)
    from api.auth import admit, authenticate
    from services.entrypoints.api_app import create_app
    from services.platform.kafka import FakePublisher

    settings = Settings(
        database_url=database_url,
        kafka="127.0.0.1:9",
        embedded=True,
        rate_limit_per_minute=10**9,
        rate_limit_per_day=10**9,
    )
    app = create_app(settings, publisher=FakePublisher())

    @app.get("/bench/open")
    async def bench_open() -> dict[str, bool]:
        return {"ok": True}

    # PrincipalDep is a module-level name: FastAPI resolves these annotations from globals.
    @app.get("/bench/authed")
    async def bench_authed(principal: PrincipalDep) -> dict[str, bool]:
        return {"ok": True}

    account = await make_account(database_url, scopes=("read-only",))
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        services = ctx.api_services()
        direct: list[float] = []
        for i in range(requests + 100):
            started = time.perf_counter()
            principal = await authenticate(ctx, account.key)
            await admit(services, principal, {})
            if i >= 100:  # warm-up
                direct.append(time.perf_counter() - started)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            authed, bare = await _timed_pair(client, account.headers, requests)
    return {
        "direct_p50_us": statistics.median(direct) * 1e6,
        "direct_p95_us": statistics.quantiles(direct, n=20)[18] * 1e6,
        "http_open_p50_us": statistics.median(bare) * 1e6,
        "http_authed_p50_us": statistics.median(authed) * 1e6,
        "http_overhead_p50_us": (statistics.median(authed) - statistics.median(bare)) * 1e6,
    }


async def _timed_pair(
    client: httpx.AsyncClient, headers: dict[str, str], n: int
) -> tuple[list[float], list[float]]:
    """Interleaved timings of the authenticated and the open route (so load drifts alike)."""
    authed: list[float] = []
    bare: list[float] = []
    for i in range(n + 100):
        for path, sink, sent in (("/bench/authed", authed, headers), ("/bench/open", bare, {})):
            started = time.perf_counter()
            response = await client.get(path, headers=sent)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            if i >= 100:
                sink.append(elapsed)
    return authed, bare


async def command_records(api: Api, device: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The ``commands`` topic's records of ``device`` (each keyed by the device, each checked
    against the topic's documented schema), waiting up to ``timeout`` seconds for the first."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        api.settings.topic("commands"),
        bootstrap_servers=api.settings.kafka,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not found:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    value = json.loads(record.value)
                    if value["device"] == device:
                        assert record.key == device.encode()
                        check_schema("commands", value)
                        found.append(value)
    finally:
        await consumer.stop()
    return found
