"""The MQTT bridge's linger: a batch gathers what a steady flow brings within the linger, and
leaves early once messages stop coming (a broker's in-flight window is full: it sends no more
before our acknowledgements, so waiting out the linger would only slow the flow down).

Messages are handed to the bridge the way paho's socket reader does, through its
``on_message`` callback, with paho's own message type; no broker is needed for the timing.
"""

from __future__ import annotations

import asyncio
import time

import paho.mqtt.client as mqtt

from ingest.mqtt.bridge import PahoBridge
from services.platform import Settings, parse_mqtt_url

LINGER = 0.5


def message(n: int) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid=n, topic=b"devices/sensor-1/up")
    msg.qos = 1
    msg.payload = b'{"values": {"n": %d}}' % n
    return msg


def bridge() -> PahoBridge:
    url = "mqtt://127.0.0.1:1883"
    taking = PahoBridge(
        Settings(embedded=True, mqtt_url=url), parse_mqtt_url(url), "t", share=False
    )
    taking.start_taking()
    return taking


async def steady(into: PahoBridge, seconds: float, every: float = 0.002) -> int:
    """Hand over a message every ``every`` seconds for ``seconds``; how many."""
    n, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        into._on_message(None, None, message(n))
        n += 1
        await asyncio.sleep(every)
    return n


async def taken(into: PahoBridge, seconds: float) -> None:
    """Take batches (lingering) for ``seconds``: the bridge learns the rate."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await into.next_batch(10_000, LINGER)


async def learned_then_emptied(into: PahoBridge, seconds: float) -> None:
    """A steady flow for ``seconds`` (the bridge learns its rate), then every message left
    taken: the next batch starts from an empty bridge that expects more."""
    feed = asyncio.create_task(steady(into, seconds))
    await taken(into, 0.8)
    await feed
    while into.pending:  # what was left
        await into.next_batch(10_000, 0.0)


async def test_a_steady_flow_is_gathered_for_the_whole_linger() -> None:
    """(The best of three batches: a stall of this busy test process longer than a few gaps
    ends a batch early, as it would in the adapter, harmlessly.)"""
    flowing = bridge()
    feed = asyncio.create_task(steady(flowing, 3.0))
    await taken(flowing, 0.8)
    best: tuple[float, int] = (0.0, 0)
    for _ in range(3):
        started = time.monotonic()
        batch = await flowing.next_batch(10_000, LINGER)
        best = max(best, (time.monotonic() - started, len(batch)))
    feed.cancel()
    assert best[0] >= 0.8 * LINGER, best
    assert best[1] >= 50, best


async def test_a_lingering_batch_leaves_once_messages_stop_coming() -> None:
    """20 messages at once (Mosquitto's in-flight window), then none until they are
    acknowledged: the batch leaves after half the linger without a message, not after all of
    it."""
    stalled = bridge()
    await learned_then_emptied(stalled, 1.0)
    for n in range(20):
        stalled._on_message(None, None, message(10_000 + n))
    started = time.monotonic()
    batch = await stalled.next_batch(10_000, LINGER)
    took = time.monotonic() - started
    assert len(batch) == 20
    assert took < 0.75 * LINGER, took


async def windowed(into: PahoBridge, window: int, seconds: float, every: float = 0.002) -> None:
    """A message every ``every`` seconds, as a broker with ``window`` messages in flight: none
    while the bridge holds that many not taken (taking a batch acknowledges it here)."""
    n, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        if into.pending < window:
            into._on_message(None, None, message(n))
            n += 1
        await asyncio.sleep(every)


async def test_a_full_in_flight_window_is_learned_once_not_waited_out_by_every_batch() -> None:
    """A broker that hands over 20 messages and then waits: the first batch that stalls
    (nothing for half the linger though the rate said more would come) teaches the window,
    and the next batches leave as soon as they hold 20 instead of each stalling."""
    limited = bridge()
    feed = asyncio.create_task(windowed(limited, 20, 5.0))
    await taken(limited, 1.0)  # the rate, then a first stall
    assert limited.stalls >= 1
    stalls = limited.stalls
    started = time.monotonic()
    sizes = [len(await limited.next_batch(10_000, LINGER)) for _ in range(10)]
    took = time.monotonic() - started
    feed.cancel()
    assert sizes == [20] * 10, sizes
    assert limited.stalls == stalls
    # Stalling, each would wait half the linger (2.5 s for ten); 20 messages take 40 ms.
    assert took < 10 * LINGER / 4, took


async def test_a_window_learned_in_a_lull_is_forgotten_once_more_come() -> None:
    """A lull of a steady flow looks like a full window; the next burst brings more than it,
    and batches gather the whole linger again."""
    lulled = bridge()
    await learned_then_emptied(lulled, 0.8)
    for n in range(5):  # then a lull: five messages and no more, though the rate says more
        lulled._on_message(None, None, message(10_000 + n))
    assert len(await lulled.next_batch(10_000, LINGER)) == 5
    assert lulled._window is not None
    assert lulled._window[0] == 5
    for n in range(60):  # more than any window a lull could teach
        lulled._on_message(None, None, message(20_000 + n))
    feed = asyncio.create_task(steady(lulled, 2.0))
    batch = await lulled.next_batch(10_000, LINGER)
    feed.cancel()
    assert lulled._window is None
    assert len(batch) > 60, len(batch)
