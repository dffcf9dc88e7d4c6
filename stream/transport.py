"""A Faust Kafka transport whose consumer does not sit on a fetch for 1.5 s, and hands its
records to the streams without three tasks per record.

- Faust creates its aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``, and tansu
  holds every fetch that long even when records have arrived, which put ~1 s on every hop of
  the pipeline. The consumer thread here only shortens that wait (a setting).
- Faust's ``Consumer._drain_messages`` races every record's delivery against a flow suspension
  (a rebalance) with ``wait_first``: three tasks and an ``asyncio.wait`` per record, about a
  tenth of a worker's CPU at a steady 500 uplinks/s (issue #16, ``python -m bench.profile``).
  :meth:`_Consumer._drain_messages` runs the same loop but races once per fetched batch: a
  suspension still stops the delivery at the record it reached, and the records not delivered
  are fetched again after the rebalance, from the committed offsets, as before.

- The embedded broker (tansu) can answer a fetch with a partition's later records before an
  earlier batch it has acknowledged is visible (:mod:`services.platform.offset_holes`). The
  consumer here reads a partition again from the start of a hole in its offsets, after a
  short pause, until the hole is filled or has lasted ``HOLE_PATIENCE``.

Everything else is Faust's own. ``tests/unit/test_stream_batching.py`` pins the Faust loop
this one mirrors, so an upgrade that changes it is read before it lands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import aiokafka
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.platform import HOLE_PAUSE, HoleGuard

#: Faust's own logger for these subclasses (else mode names one after this module): their
#: start-up chatter is Faust's, quiet below the debug level (stream.app.Worker).
_FAUST_LOGGER = logging.getLogger("faust.hivepipe.transport")

#: Records delivered before the loop yields to the event loop (Faust's figure).
_YIELD_EVERY = 100


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holes = HoleGuard()

    async def _read_again(self, tp: Any, offset: int) -> None:
        """Seek ``tp`` back to ``offset`` (on the consumer's thread), after a short pause. The
        read offset is then the last delivered, ``offset - 1``, as after a delivery: Faust
        counts a gap that stays from there (its commits skip a gap only once told of it)."""
        await asyncio.sleep(HOLE_PAUSE)
        await self._thread.seek_wait({tp: offset})
        self._read_offset[tp] = offset - 1

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _deliver(self, first: tuple[Any, Any], rest: AsyncIterator[Any]) -> None:
        """Hand one fetched batch's records to the streams (Faust's per-record checks)."""
        callback = self.callback
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        holes = self.holes
        read_again: set[Any] = set()  # partitions sought back: the batch's rest comes again
        since_yield = 0
        item: tuple[Any, Any] | None = first
        while item is not None:
            tp, message = item
            since_yield += 1
            if since_yield > _YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = get_read_offset(tp)
            if tp in read_again:
                pass
            elif (again := holes.check(tp, offset, r_offset)) is not None:
                read_again.add(tp)
                await self._read_again(tp, again)
            elif r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)
                holes.delivered(tp, offset)
            item = await anext(rest, None)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        flag = faust_consumer.CONSUMER_FETCHING
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(flag)
                records = cast(AsyncGenerator[Any, None], getmany(timeout=1.0))
                # Faust sleeps here too: getmany may return at once, in a loop.
                await self.sleep(0)
                if not self.should_stop:
                    first = await anext(records, None)
                    if first is not None:
                        await self.wait_first(
                            self._deliver(first, records), self.suspend_flow.wait()
                        )
                    await records.aclose()
                self.diag.unset_flag(flag)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(flag)


class Transport(faust_aiokafka.Transport):
    """``kafka://`` with a configurable consumer fetch wait and a leaner record hand-off."""

    Consumer = _Consumer
