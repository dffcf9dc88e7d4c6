"""``hivepipe status``: the processes of ``hivepipe up`` and the pipeline's figures, once or
refreshed (``--watch``). The figures are gathered by :mod:`services.entrypoints.status`."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from services.entrypoints.installation import installation_url
from services.entrypoints.status import LiveSources, StatusReader
from services.entrypoints.status_view import render
from services.platform import Settings

#: Seconds a refresh under way may take to wind down after Ctrl-C.
STOP_GRACE = 3.0


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

    async def refresh(live: Live | None) -> None:
        # Ctrl-C sets ``stop`` rather than cancelling the main task: Python 3.11's wait_for
        # (inside aiokafka's and our reads) can swallow a cancellation that races with its
        # result, and the loop then went on refreshing after Ctrl-C.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        stopped = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            read = asyncio.ensure_future(reader.read())
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                read.cancel()
                await asyncio.wait({read}, timeout=STOP_GRACE)
                break
            if live is not None:
                live.update(render(read.result()), refresh=True)
            else:  # a pipe or a file: each refresh printed after the last
                console.print(render(read.result()))
                console.file.flush()
            await asyncio.wait({stopped}, timeout=interval)

    if not console.is_terminal:  # Live draws in place, and elsewhere only its last frame
        asyncio.run(refresh(None))
        return
    with Live(console=console, auto_refresh=False) as live:
        asyncio.run(refresh(live))
