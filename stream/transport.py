"""A Faust Kafka transport whose consumer does not sit on a fetch for 1.5 s.

Faust creates its aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``, and tansu
holds every fetch that long even when records have arrived, which put ~1 s on every hop of the
pipeline. This transport only shortens that wait (a setting); everything else is Faust's own.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

#: Faust's own logger for these subclasses (else mode names one after this module): their
#: start-up chatter is Faust's, quiet below the debug level (stream.app.Worker).
_FAUST_LOGGER = logging.getLogger("faust.hivepipe.transport")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    logger = _FAUST_LOGGER

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    logger = _FAUST_LOGGER

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """``kafka://`` with a configurable consumer fetch wait."""

    Consumer = _Consumer
