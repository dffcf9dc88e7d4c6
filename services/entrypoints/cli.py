"""The ``hivepipe`` command: ``up`` runs everything; each role can also run on its own."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from services.entrypoints.cli_accounts import accounts_app
from services.entrypoints.cli_keys import keys_app
from services.entrypoints.cli_status import status
from services.entrypoints.cli_users import users_app
from services.entrypoints.topics_cli import topics_app
from services.platform import Settings

app = typer.Typer(help="hivepipe: IoT ingestion pipeline.", no_args_is_help=True)
ingest_app = typer.Typer(help="Ingest adapters that are not HTTP callbacks.")
app.add_typer(ingest_app, name="ingest")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(accounts_app, name="accounts")
app.add_typer(topics_app, name="topics")
app.command()(status)


def _settings(*, verbose: bool = False) -> Settings:
    settings = Settings()
    if verbose:
        settings = settings.model_copy(update={"log_level": "debug"})
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return settings


@app.command()
def up() -> None:
    """Run the whole pipeline: embedded servers for what is not configured, then every role."""
    from services.entrypoints import supervisor

    raise typer.Exit(supervisor.run(_settings(), echo=lambda line: typer.echo(line)))


@app.command()
def api(
    fd: Annotated[
        int | None,
        typer.Option(
            help="Serve on this inherited listening socket rather than bind one (hivepipe up "
            "runs several API processes on one socket).",
            hidden=True,
        ),
    ] = None,
) -> None:
    """Run the API (REST, GraphQL and the network callbacks)."""
    import contextlib
    import socket

    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from services.entrypoints.api_app import create_app

    settings = _settings()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, settle_heap=True),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            # At this level uvicorn prints no access line, but still formats one per request.
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=None if fd is None else [socket.socket(fileno=fd)])
    if not server.started:  # as uvicorn.run exits when the app did not start
        raise SystemExit(STARTUP_FAILURE)


@app.command()
def worker(
    verbose: Annotated[
        bool,
        typer.Option(
            "-v",
            "--verbose",
            help="Log at the debug level, Faust's start-up tables and boxes included "
            "(as HIVEPIPE_LOG_LEVEL=debug).",
        ),
    ] = False,
) -> None:
    """Run the Faust worker (decode, store, Orbit acks, webhooks): one line per meaningful
    event (ready, rebalances, journal replays, failures) at INFO."""
    import asyncio

    import mode.loop

    from services.platform import ALL_TOPICS, ensure_topics, lower_priority, metrics
    from stream import Worker, create_app

    settings = _settings(verbose=verbose)
    assert settings.kafka, "HIVEPIPE_KAFKA is required"
    lower_priority(settings.background_nice)  # before any thread starts: they inherit it
    asyncio.run(
        ensure_topics(settings.kafka, [settings.topic(t) for t in ALL_TOPICS], settings.partitions)
    )
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port, settings.api_host)
    # uvloop, as the API runs (uvicorn's default): asyncio's own loop was about a tenth of the
    # worker's CPU at 500 uplinks/s; the consumer thread's loop is one too.
    mode.loop.use("uvloop")
    faust_app = create_app(settings)
    Worker(faust_app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@ingest_app.command("mqtt")
def ingest_mqtt() -> None:
    """Run the MQTT adapter: devices/+/up and devices/+/state to the uplinks topic."""
    from ingest.mqtt import run

    run(_settings())


if __name__ == "__main__":
    app()
