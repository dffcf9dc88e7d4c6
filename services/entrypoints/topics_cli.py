"""``hivepipe topics tail NAME``: print a Kafka topic's messages, one JSON line each.

For the embedded broker too (tansu), which common Kafka command-line tools do not talk to
(kcat 1.7 fails on its API version answer). The broker is ``HIVEPIPE_KAFKA``, else the running
installation's (``{HIVEPIPE_DATA_DIR}/urls.json``, written by ``hivepipe up``). Messages are read
from the beginning of the topic: tansu's end offsets cannot be trusted for "only new ones". A
hole in a partition's offsets is read again (tansu can make a batch visible late:
:mod:`services.platform.offset_holes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

import typer

from services.entrypoints.installation import URLS_FILE, installation_url
from services.platform import Settings

topics_app = typer.Typer(help="The Kafka topics (docs/topics.md).", no_args_is_help=True)


def full_name(name: str, prefix: str) -> str:
    """``readings`` -> ``hivepipe.readings``; a name that has the prefix already is kept."""
    return name if name.startswith(prefix) else f"{prefix}{name}"


async def tail(
    bootstrap: str,
    topic: str,
    emit: Callable[[str], None],
    *,
    count: int | None = None,
    idle: float | None = None,
) -> int:
    """Emit ``key<TAB>value`` per message from the topic's beginning; stop after ``count``
    messages, or after ``idle`` seconds without one (None: never). Returns how many."""
    from aiokafka import AIOKafkaConsumer

    from services.platform import HOLE_PAUSE, HoleGuard

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen, last = 0, time.monotonic()
    holes = HoleGuard()
    try:
        while count is None or seen < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for tp, records in batches.items():
                for record in records:
                    again = holes.check(tp, record.offset, holes.last(tp))
                    if again is not None:
                        await asyncio.sleep(HOLE_PAUSE)
                        consumer.seek(tp, again)
                        break
                    key = record.key.decode("utf-8", "replace") if record.key else ""
                    value = record.value.decode("utf-8", "replace") if record.value else ""
                    emit(f"{key}\t{value}")
                    holes.delivered(tp, record.offset)
                    seen, last = seen + 1, time.monotonic()
                    if count is not None and seen >= count:
                        return seen
            if idle is not None and time.monotonic() - last > idle:
                return seen
    finally:
        await consumer.stop()
    return seen


@topics_app.command("tail")
def tail_command(
    name: Annotated[str, typer.Argument(help="uplinks, readings, device-events, commands, ...")],
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="stop after N")] = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="wait for new messages")
    ] = True,
) -> None:
    """Print the topic's messages (key, a tab, the JSON value), from its beginning."""
    settings = Settings.for_administration()
    bootstrap = installation_url(settings, "kafka")
    if bootstrap is None:
        typer.echo(
            f"error: no Kafka: set HIVEPIPE_KAFKA, or start `hivepipe up` (it writes"
            f" {settings.data_dir / URLS_FILE})",
            err=True,
        )
        raise typer.Exit(1)
    topic = full_name(name, settings.topic_prefix)
    try:
        asyncio.run(tail(bootstrap, topic, typer.echo, count=count, idle=None if follow else 2.0))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # one line, not a trace: the broker is away, most likely
        typer.echo(f"error: cannot read {topic} from {bootstrap}: {exc!r}", err=True)
        raise typer.Exit(1) from None
