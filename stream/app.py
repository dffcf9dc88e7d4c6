"""The Faust app class of a worker process, its worker, and the file that says it is ready."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import faust
from faust.tables import TableManager

from services.platform import Settings
from stream.resources import Resources
from stream.transport import Transport

log = logging.getLogger(__name__)


class Tables(TableManager):
    """Faust's table manager without its start's 1 s wait when the app has no tables.

    Faust's ``TableManager.on_start`` sleeps 1 s so that agents starting meanwhile can declare
    their tables, and the consumer subscribes only after it: a second of every worker's start,
    a restart after a crash included (its recovery was 12.3 s, measured). hivepipe's worker
    declares no table (no authoritative state in Faust), so when none is registered it starts
    at once; with tables it is Faust's own start.
    """

    async def on_start(self) -> None:
        if len(self):
            await super().on_start()
        elif not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class HivepipeApp(faust.App):
    """A Faust app that owns the worker's :class:`Resources` and closes them at shutdown."""

    #: Faust's own logger (else mode names one after this module): its start-up chatter is
    #: Faust's, quiet below the debug level (:class:`Worker`).
    logger = logging.getLogger("faust.hivepipe.app")
    resources: Resources
    #: The consumer's fetch wait (ms), read by :mod:`stream.transport`; the setting's default
    #: until :func:`stream.worker.create_app` sets the configured one.
    fetch_max_wait_ms: int = Settings.model_fields["fetch_max_wait_ms"].default
    #: When this worker first had its partitions (``time.time()``), set by
    #: :func:`stream.worker.create_app`'s rebalance handler; None until then.
    joined_at: float | None = None

    #: ``conf.Event``, read once: Faust read it from its settings for every record (a settings
    #: lookup costs a ``__getattribute__`` in Python, about 1.5 % of a worker's CPU).
    _event_class: Any = None

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    def create_event(self, key: Any, value: Any, headers: Any, message: Any) -> Any:
        """Faust's, with the event class read once."""
        event_class = self._event_class
        if event_class is None:
            event_class = self._event_class = self.conf.Event
        return event_class(self, key, value, headers, message)

    def _new_producer(self) -> Any:
        """Faust's producer, whose buffer check before every record skips the settings.

        Before each record it hands a stream, Faust waits until its producer's buffer is under
        ``max_messages``; the buffer's size reads ``conf.producer_threaded`` each time (about
        2 % of a worker's CPU). Records are produced by :mod:`services.platform`'s publisher,
        not through Faust's buffer, which stays empty: the check reads the queue's length
        first, and calls Faust's own only when the buffer holds more.
        """
        producer = super()._new_producer()
        buffer = producer.buffer
        if not self.conf.producer_threaded:
            pending: asyncio.Queue[Any] = buffer.pending
            faust_wait = buffer.wait_until_ebb

            async def wait_until_ebb() -> None:
                if pending.qsize() > buffer.max_messages:
                    await faust_wait()

            buffer.wait_until_ebb = wait_until_ebb  # type: ignore[method-assign]
        return producer

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.resources.close()


#: The libraries whose start-up chatter (tables, ASCII boxes, "[^--Consumer]: Starting...") is
#: logged at INFO: shown only at the debug level (``hivepipe worker -v``), their warnings always.
CHATTY_LOGGERS = ("faust", "mode", "aiokafka")


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner, and without its start-up chatter below the
    debug level: the worker's own events (ready, rebalances, journal replays, failures) are
    one line each at INFO or WARNING.

    To spin on every log record, Faust sets the root logger to DEBUG when the level is WARNING
    or above: every ``log.debug`` in aiokafka and Faust (one per message produced) then builds a
    record that the handler drops, about 8 % of the worker's CPU under load.
    """

    #: "[^Worker]: Starting..." and the like; its "Ready" stays at INFO.
    mundane_level = "debug"

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        if level > logging.DEBUG:
            for name in CHATTY_LOGGERS:
                logging.getLogger(name).setLevel(max(level, logging.WARNING))


def ready_file(settings: Settings, pid: int | None = None) -> Path:
    """The file a worker touches once its first rebalance is complete."""
    return settings.data_dir / "ready" / f"worker-{pid or os.getpid()}"
