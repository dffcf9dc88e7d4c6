"""The API process: a FastAPI app built by a factory (the composition root of this role): the
operators' routes (:mod:`api`) and the network callbacks (:mod:`ingest.http`) on one app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from api import deps as api_deps
from api import errors
from api.body_limit import BodyLimitMiddleware
from api.context import ApiContext
from api.responses import OrjsonResponse
from api.routes import (
    commands,
    data,
    devices,
    downlinks,
    graphql,
    keys,
    ops,
    orbit,
    usage,
    users,
    webhooks,
)
from ingest import http as callbacks
from ingest.http.common import ingest_publisher
from ingest.http.sigfox import ANSWER_POOL_SIZE
from services.platform import runtime
from services.platform.db import migrate_for, open_pool
from services.platform.kafka import KafkaPublisher, Publisher, PublishFailed
from services.platform.outbox import OutboxRelay
from services.platform.settings import Settings
from services.uplinks import dedup

log = logging.getLogger(__name__)


async def _purge_dedup(ctx: ApiContext) -> None:
    while True:
        await asyncio.sleep(60)
        with contextlib.suppress(Exception):
            async with ctx.pool.connection() as conn:
                await dedup.purge(conn, ctx.settings.dedup_window_seconds)


async def _start_outbox_and_answers(ctx: ApiContext) -> None:
    """The outbox relay (drains leftovers at once) and the Sigfox downlink answer's own
    connections (:mod:`ingest.http.sigfox`)."""
    assert ctx.settings.database_url, "HIVEPIPE_DATABASE_URL is required"
    answer_pool = await open_pool(
        ctx.settings.database_url,
        size=ANSWER_POOL_SIZE,
        name="orbit-answer",
        prepare=ctx.settings.db_prepare,
    )
    relay = OutboxRelay(ctx.pool, ingest_publisher(ctx), ctx.settings.topic)
    relay.start()
    ctx.answer_pool = answer_pool
    ctx.outbox_relay = relay

    async def close() -> None:
        await relay.stop()
        await answer_pool.close()

    ctx.closers.append(close)


def create_app(
    settings: Settings, *, publisher: Publisher | None = None, settle_heap: bool = False
) -> FastAPI:
    """Build the API for ``settings``; the lifespan opens the pool and the Kafka producer.

    ``settle_heap``: once started, freeze the process's heap (:func:`services.platform.runtime.
    settle_heap`); for the API's own process (``hivepipe api``), not a host that embeds it.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.database_url, "HIVEPIPE_DATABASE_URL is required"
        pool = await open_pool(
            settings.database_url,
            size=settings.db_pool_size,
            name="api",
            prepare=settings.db_prepare,
        )
        async with pool.connection() as conn:
            await migrate_for(conn, settings)
        own_publisher: KafkaPublisher | None = None
        pub: Publisher
        if publisher is None:
            assert settings.kafka, "HIVEPIPE_KAFKA is required"
            own_publisher = KafkaPublisher(settings.kafka, linger_ms=settings.callback_linger_ms)
            with contextlib.suppress(PublishFailed):
                await own_publisher.start()  # else callbacks answer 503 until Kafka is back
            pub = own_publisher
        else:
            pub = publisher
        ctx = ApiContext(settings=settings, pool=pool, publisher=pub)
        if own_publisher is not None:
            kafka = own_publisher

            async def kafka_ready() -> bool:
                try:
                    await kafka.start()
                except PublishFailed:
                    return False
                return True

            ctx.kafka_ready = kafka_ready
        await api_deps.start_api_services(ctx)
        await _start_outbox_and_answers(ctx)
        app.state.ctx = ctx
        purge = asyncio.create_task(_purge_dedup(ctx))
        if settle_heap:  # full GC pauses were the downlink answer's p99 (services/platform/runtime)
            runtime.settle_heap()
        try:
            yield
        finally:
            purge.cancel()
            for closer in ctx.closers:
                await closer()
            if own_publisher is not None:
                await own_publisher.stop()
            await pool.close()

    app = FastAPI(
        title="hivepipe",
        version="0.1.0",
        description="IoT ingestion pipeline: callbacks, queries, devices, Orbit parameters.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    errors.install(app)
    api_deps.install(app)
    app.add_middleware(callbacks.CallbackShortcut)  # inside the body limit, outside everything else
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    for router in (ops.router, callbacks.router, devices.router, data.router):
        app.include_router(router)
    for router in (keys.router, users.router, commands.router, downlinks.router, usage.router):
        app.include_router(router)
    app.include_router(graphql.router)
    app.include_router(orbit.router)
    app.include_router(webhooks.router)
    return app
