"""``hivepipe status``: the processes of ``hivepipe up`` and the pipeline's figures, once or
refreshed (``--watch``). The figures are gathered by :mod:`services.entrypoints.status`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from services.entrypoints.installation import installation_url
from services.entrypoints.status import LiveSources, StatusReader
from services.entrypoints.status_view import render
from services.platform import Settings


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float,
        typer.Option(
            min=0.2,
            help="Seconds between refreshes with --watch; once, how long the points stored "
            "are counted.",
        ),
    ] = 2.0,
) -> None:
    """Roles and their processes, restarts, consumer lag per topic, uplinks/s, points stored/s,
    the webhook backlog and the dead letters of the last hour."""
    settings = Settings.for_administration()
    sources = LiveSources(
        settings,
        kafka=installation_url(settings, "kafka"),
        database_url=installation_url(settings, "database_url"),
    )
    reader = StatusReader(sources, window=interval)
    console = Console()
    if not watch:
        console.print(render(asyncio.run(reader.read())))
        return

    async def refresh(live: Live) -> None:
        while True:
            live.update(render(await reader.read()), refresh=True)
            await asyncio.sleep(interval)

    try:
        with Live(console=console, auto_refresh=False) as live:
            asyncio.run(refresh(live))
    except KeyboardInterrupt:
        pass
