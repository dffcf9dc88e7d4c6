"""The whole pipeline for end-to-end tests: the API in this event loop (real HTTP on a port),
the Faust worker as a real child process, on the test servers with a private schema and topic
prefix."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from services.entrypoints import embedded
from services.entrypoints.supervisor import prepare
from services.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    settings: Settings
    api_key: str
    client: httpx.AsyncClient
    worker: subprocess.Popen[bytes] | None

    @property
    def token(self) -> str:
        return self.settings.token


def stack_settings(
    *,
    database_url: str,
    kafka: str,
    mqtt_url: str | None,
    prefix: str,
    data_dir: Path,
    **extra: object,
) -> Settings:
    # Tests poll the API far faster than a client may: the rate-limit tests set their own limits.
    extra.setdefault("rate_limit_per_minute", 1_000_000)
    return Settings(
        kafka=kafka,
        database_url=database_url,
        mqtt_url=mqtt_url,
        topic_prefix=prefix,
        data_dir=data_dir,
        api_port=embedded.free_port(),
        callback_token="test-callback-token-0123456789",
        partitions=2,
        flush_interval=0.05,
        consumer_session_timeout=3.0,
        embedded=True,
        **extra,  # type: ignore[arg-type]
    )


def settings_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.as_env()}


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    log = open(settings.data_dir / "worker.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "services.entrypoints.cli", "worker"],
        env=settings_env(settings),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def wait_ready(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    """Wait until the worker has its partitions (it touches a file then)."""
    from stream.app import ready_file

    ready = ready_file(settings, worker.pid)
    for _ in range(600):
        if ready.exists():
            return
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}; see worker.log")
        await asyncio.sleep(0.05)
    raise TimeoutError("worker not ready after 30s")


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def run_stack(settings: Settings, *, with_worker: bool = True) -> AsyncIterator[Stack]:
    from services.entrypoints.api_app import create_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api_key = await prepare(settings)
    worker = start_worker(settings) if with_worker else None
    if worker is not None:
        await wait_ready(settings, worker)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=settings.api_port, log_level="warning", lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.api_port}", timeout=15
        ) as client:
            yield Stack(settings=settings, api_key=api_key, client=client, worker=worker)
    finally:
        server.should_exit = True
        await task
        if worker is not None:
            stop_worker(worker)


@asynccontextmanager
async def stack_in_new_schema(
    pg_server: str,
    *,
    kafka: str,
    mqtt_url: str | None,
    prefix: str,
    data_dir: Path,
    **extra: object,
) -> AsyncIterator[Stack]:
    """A whole pipeline on a schema of its own, dropped afterwards."""
    from tests.conftest import drop_schema, new_schema

    name, url = new_schema(pg_server)
    try:
        settings = stack_settings(
            database_url=url,
            kafka=kafka,
            mqtt_url=mqtt_url,
            prefix=prefix,
            data_dir=data_dir,
            **extra,
        )
        async with run_stack(settings) as running:
            yield running
    finally:
        drop_schema(pg_server, name)


async def eventually(check, *, timeout: float = 15.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check()`` (async) until it returns a truthy value; return it or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
