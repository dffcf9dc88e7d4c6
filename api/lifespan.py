"""The API's own services, opened in the app's lifespan: the rate limiter, the MQTT command
publisher, the LoRaWAN network server, and the flusher that writes the buffered ``last_used``
times and usage counters every ``stats_flush_seconds`` (and once more at shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from api.context import ApiContext, ApiServices
from api.ratelimit import AccountLimiter, open_storage
from services.accounts import LastUsed, usage
from services.commands import CommandPublisher, NoBroker, PahoCommandPublisher
from services.downlinks import NetworkServer, network_servers

log = logging.getLogger(__name__)


#: How long the flush at shutdown waits for a database connection: with the database away,
#: the pool's own timeout (30 s) kept the process past the supervisor's 20 s before SIGKILL.
SHUTDOWN_FLUSH_TIMEOUT = 3.0


async def flush_buffers(
    ctx: ApiContext, services: ApiServices, *, connection_wait: float | None = None
) -> None:
    """Write the pending ``last_used`` times and usage counters (one connection, two statements);
    ``connection_wait``: how long to wait for the connection (None: the pool's own timeout)."""
    async with ctx.pool.connection(timeout=connection_wait) as conn:
        await services.last_used.flush(conn)
        await usage.flush(conn)


async def _flush_forever(ctx: ApiContext, services: ApiServices) -> None:
    while True:
        await asyncio.sleep(ctx.settings.stats_flush_seconds)
        try:
            await flush_buffers(ctx, services)
        except Exception:
            log.warning("could not write last_used/usage; kept for the next flush", exc_info=True)


async def start_api_services(ctx: ApiContext) -> None:
    """Open the limiter, the MQTT command publisher, the network server; start the flusher."""
    settings = ctx.settings
    commands: CommandPublisher
    if settings.mqtt_url:
        paho = PahoCommandPublisher(settings.mqtt_url)
        paho.start()
        # Start ready when the broker is up; when it is not, start anyway (commands are 503
        # and /readyz says so until paho's reconnect succeeds).
        if not await paho.wait_connected(3.0):
            log.warning("MQTT broker not reachable yet; commands answer 503 until it is")
        commands = paho

        async def mqtt_ready() -> bool:
            return paho.connected

        ctx.mqtt_ready = mqtt_ready
    else:
        commands = NoBroker()
    problem = "no LoRaWAN network server is configured (HIVEPIPE_LORAWAN_SERVER)"
    server: NetworkServer | None = None
    try:
        server = network_servers.from_settings(settings)
    except network_servers.NotConfigured as exc:
        problem = f"the LoRaWAN network server is not fully configured: {exc}"
        log.error(problem)
    services = ApiServices(
        limiter=AccountLimiter(
            open_storage(settings.rate_limit_storage, pool=ctx.pool),
            per_minute=settings.rate_limit_per_minute,
            per_day=settings.rate_limit_per_day,
        ),
        last_used=LastUsed(),
        commands=commands,
        network_server=server,
        network_server_problem=problem,
    )
    ctx.services = services
    flusher = asyncio.create_task(_flush_forever(ctx, services))

    async def close() -> None:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        try:
            await flush_buffers(ctx, services, connection_wait=SHUTDOWN_FLUSH_TIMEOUT)
        except Exception as exc:
            log.warning("could not write last_used/usage at shutdown: %r", exc)
        await services.commands.close()
        await services.limiter.close()
        if services.network_server is not None:
            await services.network_server.close()

    ctx.closers.append(close)
