"""The API process: a FastAPI app built by a factory (the composition root of this role): the
operators' routes (:mod:`api`) and the network callbacks (:mod:`ingest.http`) on one app."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable

from fastapi import FastAPI

from api import (
    ApiContext,
    BodyLimitMiddleware,
    OrjsonResponse,
    install_error_handlers,
    install_openapi_errors,
    routers,
    start_api_services,
)
from ingest import http as callbacks
from ingest.http import ANSWER_POOL_SIZE, ingest_publisher
from services.platform import (
    KafkaPublisher,
    OutboxRelay,
    Publisher,
    PublishFailed,
    Settings,
    migrate_for,
    open_pool,
    runtime,
)
from services.uplinks import dedup

log = logging.getLogger(__name__)

#: A step of the API's shutdown (a closer, the Kafka producer's flush, the pool) still running
#: after this many seconds is abandoned, with its stack in the log: a stop must end, so that a
#: supervisor (or a test's teardown) is not held by one stuck client. Once in CI (2026-12-07) a
#: test app's shutdown waited forever on one of them, and nothing said which.
SHUTDOWN_STEP_TIMEOUT = 15.0


async def shutdown_step(name: str, work: Awaitable[None], within: float | None = None) -> bool:
    """Await ``work``; True when it ended (an error in it is logged), False when it was still
    running after ``within`` seconds (:data:`SHUTDOWN_STEP_TIMEOUT`): then it is cancelled and
    its stack, where it waited, is logged."""
    within = within or SHUTDOWN_STEP_TIMEOUT
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=within)
    if task in done:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("shutdown: %s failed: %r", name, exc, exc_info=exc)
        return True
    stack = io.StringIO()
    task.print_stack(file=stack)
    log.error(
        "shutdown: %s still running after %.0f s, abandoned; it was waiting in:\n%s",
        name,
        within,
        stack.getvalue(),
    )
    task.cancel()
    return False


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
            # Kafka's own time-out comes before the callbacks' deadline: a broker that does
            # not acknowledge is a 503 kafka_unavailable, not a pipeline_timeout.
            own_publisher = KafkaPublisher(
                settings.kafka,
                linger_ms=settings.callback_linger_ms,
                timeout=min(5.0, max(0.5, settings.callback_deadline - 1.0)),
            )
            with contextlib.suppress(PublishFailed):
                await own_publisher.start()  # else callbacks answer 503 until Kafka is back
            pub = own_publisher
        else:
            pub = publisher
        ctx = ApiContext(settings=settings, pool=pool, publisher=pub)
        if own_publisher is not None:
            ctx.kafka_ready = own_publisher.reachable
        await start_api_services(ctx)
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
                await shutdown_step(closer.__qualname__, closer())
            if own_publisher is not None:
                await shutdown_step("the Kafka producer's stop", own_publisher.stop())
            await shutdown_step("the database pool's close", pool.close())

    app = callbacks.CallbackApp(
        max_body_bytes=settings.max_body_bytes,
        title="hivepipe",
        version="0.1.0",
        description="IoT ingestion pipeline: callbacks, queries, devices, Orbit parameters.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
        # Metrics are Prometheus' (/metrics). FastAPI's OpenTelemetry bridge asked OTel for
        # its three providers on every request (reading os.environ each time) to learn that
        # none is configured: about 3 % of the API's CPU per callback.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    install_openapi_errors(app)
    # The callbacks that CallbackApp serves itself apply the same limit and timing.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(callbacks.CallbackTiming)  # outermost: the whole answer
    for router in routers(callbacks=callbacks.router):
        app.include_router(router)
    return app
