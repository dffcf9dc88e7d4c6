"""The paho side of the MQTT ingest: one client whose network work runs on the asyncio loop
(paho's socket callbacks: a reader, a writer when it has packets to send, and a keepalive
task), not in a thread of its own.

The bridge connects (probing the broker first, and again while it is down), reconnects when
the connection is lost, subscribes in a persistent session (``clean_start=False``, a session
expiry; a shared subscription when the broker has them), and queues every received message
for :meth:`PahoBridge.next_batch`. PUBACKs are manual (:meth:`PahoBridge.ack`, once the
batch is on Kafka): what is not acknowledged is delivered again to this session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.mqtt.probe import BrokerCapabilities, new_client, probe_broker
from services.platform import ArrivalRate, BrokerAddress, Settings
from services.uplinks import subscriptions

log = logging.getLogger(__name__)

#: A lingering batch leaves once no message has come for this part of the linger
#: (:meth:`PahoBridge._linger`). Messages come in bursts (at 500/s, gaps of 15 to 30 ms were
#: common): five gaps at the mean rate (10 ms) ended 171 of 185 batches early.
QUIET = 0.5
#: How long (s) a broker's in-flight window, learned from a batch that stalled, is trusted
#: before it must be learned again (:meth:`PahoBridge._linger`).
WINDOW_TTL = 10.0


#: Seconds a new connection may wait for its CONNACK before it is made again.
CONNACK_WAIT = 10

#: MQTT 5 SUBACK reason "Shared Subscriptions not supported".
_SHARED_NOT_SUPPORTED = 0x9E


@dataclass(slots=True)
class Received:
    """One message as paho handed it over (``generation``: the connection it came on)."""

    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float


class PahoBridge:
    """A paho client for the ingest: ``await connect()``, ``next_batch()``, ``ack()``.

    Messages are queued only between :meth:`start_taking` and :meth:`stop_taking`; one that
    arrives outside is not acknowledged, so the broker delivers it again.
    """

    def __init__(
        self,
        settings: Settings,
        address: BrokerAddress,
        client_id: str,
        *,
        share: bool,
        on_receipt: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        #: Called for each message received (on the loop), acknowledged or not: the broker
        #: holds it until its PUBACK (services/platform/broker_saves.py).
        self._on_receipt = on_receipt
        self.address = address
        self.client_id = client_id
        self.capabilities: BrokerCapabilities | None = None
        self._want_share = share
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: collections.deque[Received] = collections.deque()
        self._wake = asyncio.Event()
        self._arrivals = ArrivalRate()
        #: The broker's in-flight window as last learned (messages, when), see _linger.
        self._window: tuple[int, float] | None = None
        #: Batches that waited out a quiet gap while the rate said more would come.
        self.stalls = 0
        self._wake_pending = False
        self._subscribed = asyncio.Event()
        self._generation = 0
        self._filters: list[str] = []
        self._accepting = False
        self._stopping = False
        self._network: asyncio.Task[None] | None = None

    # -- the asyncio side ------------------------------------------------------------------

    def start_taking(self) -> None:
        """Queue the messages received from now on; call from the asyncio loop."""
        self._loop = asyncio.get_running_loop()
        self._accepting = True

    def stop_taking(self) -> None:
        """Queue no more messages; :meth:`next_batch` returns what is left, then ``[]``."""
        self._accepting = False
        self._stopping = True
        self._wake.set()

    async def wait_subscribed(self, within: float) -> None:
        """Return once the subscriptions are in place (raises TimeoutError)."""
        async with asyncio.timeout(within):
            await self._subscribed.wait()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    @property
    def pending(self) -> int:
        """Messages received and not taken yet."""
        return len(self._inbox)

    async def next_batch(self, max_size: int, linger: float = 0.0) -> list[Received]:
        """Up to ``max_size`` messages, waiting for the first, then ``linger`` seconds for
        more while fewer have come, when the recent rate says a few more will
        (:class:`ArrivalRate`: a rare message is not held); ``[]`` once stopped and empty."""
        while not self._inbox:
            if self._stopping:
                return []
            self._wake.clear()
            if not self._inbox:
                await self._wake.wait()
        if (
            len(self._inbox) < max_size
            and not self._stopping
            and self._arrivals.worth_lingering(linger)
        ):
            await self._linger(max_size, linger)
        count = min(len(self._inbox), max_size)
        self._arrivals.arrived(time.monotonic(), count)
        return [self._inbox.popleft() for _ in range(count)]

    async def _linger(self, max_size: int, linger: float) -> None:
        """Wait up to ``linger`` seconds for ``max_size`` messages, and no longer than
        ``QUIET`` of it without a new one.

        A broker sends only so many messages before their acknowledgements (Mosquitto's
        ``max_inflight_messages``, 20 by default): a batch that waited out the quiet gap
        though the rate said several more would come has filled that window, and its size is
        learned. For ``WINDOW_TTL`` seconds a batch then leaves as soon as it holds that many
        (every earlier batch is acknowledged by then, so the inbox is what the broker has
        in flight), instead of waiting out a gap each time: a small window does not slow
        the flow to a window per gap. A window learned from a mere lull is at worst too
        small (batches leave earlier), and is forgotten once more than it is seen.
        """
        started = time.monotonic()
        quiet = linger * QUIET
        limit = max_size
        window = self._window
        if window is not None:
            if started - window[1] >= WINDOW_TTL or len(self._inbox) > window[0]:
                self._window = window = None
            else:
                limit = min(limit, window[0])
        seen, last = len(self._inbox), started
        while len(self._inbox) < limit and not self._stopping:
            now = time.monotonic()
            if now - started >= linger:
                return
            if now - last >= quiet:
                if self._arrivals.worth_lingering(quiet):  # several were due meanwhile
                    self.stalls += 1
                    self._window = (len(self._inbox), now)
                return
            # A look every quarter of ``quiet``: the batch leaves within 1.25 ``quiet`` of its
            # last message (a look every ``quiet`` could miss one that came just after a look).
            await asyncio.sleep(min(quiet / 4, started + linger - now))
            if len(self._inbox) > seen:
                seen, last = len(self._inbox), time.monotonic()
        if window is not None and len(self._inbox) > window[0]:
            self._window = None  # the broker sent more than the window learned: a lull's

    def ack(self, batch: list[Received]) -> int:
        """Acknowledge a batch; the number of its messages now accepted for good.

        Messages of an earlier connection are not acknowledged: the broker delivers them again.
        """
        client = self._client
        if client is None:
            return 0
        acked = 0
        generation = self._generation
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                client.ack(item.mid, item.qos)
                acked += 1
            elif item.qos == 0:
                acked += 1
        return acked

    async def connect(self) -> None:
        """Probe the broker until it answers, then start the client (it reconnects by itself)."""
        delay = 0.5
        while True:
            try:
                caps = await asyncio.to_thread(probe_broker, self.address)
                break
            except OSError as exc:  # refused, unreachable, no handshake, credentials
                log.warning("MQTT broker %s not reachable (%s); retrying", self.address.host, exc)
            except Exception:
                log.exception("MQTT broker %s: unexpected error; retrying", self.address.host)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        self.capabilities = caps
        shared = caps.shared and self._want_share and bool(self.settings.mqtt_share_group)
        group = self.settings.mqtt_share_group if shared else None
        self._filters = subscriptions(self.settings.mqtt_topic_prefix, group=group)
        if caps.protocol == mqtt.MQTTv5:
            client = new_client(self.address, self.client_id, caps.protocol, manual_ack=True)
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.mqtt_session_expiry
            connect = functools.partial(
                client.connect,
                self.address.host,
                self.address.port,
                keepalive=30,
                clean_start=False,
                properties=props,
            )
        else:
            log.warning("MQTT broker without MQTT 5: plain subscriptions (run a single replica)")
            client = new_client(
                self.address, self.client_id, caps.protocol, manual_ack=True, clean_session=False
            )
            connect = functools.partial(
                client.connect, self.address.host, self.address.port, keepalive=30
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        # paho's network work runs on this loop (its socket callbacks), not in a thread of
        # its own: no GIL hand-offs and no wake-ups between two threads for every message.
        loop = asyncio.get_running_loop()

        def readable() -> None:
            client.loop_read()
            # TLS: records already decrypted wait in the socket object, not in the kernel,
            # and wake no reader (paho's own loop checks ``pending()`` the same way).
            pending = getattr(client.socket(), "pending", None)
            while pending is not None and pending() > 0:
                client.loop_read()
                pending = getattr(client.socket(), "pending", None)

        def socket_open(_c: mqtt.Client, _u: Any, sock: Any) -> None:
            loop.add_reader(sock, readable)

        def socket_close(_c: mqtt.Client, _u: Any, sock: Any) -> None:
            loop.remove_reader(sock)

        def want_write(c: mqtt.Client, _u: Any, sock: Any) -> None:
            loop.add_writer(sock, c.loop_write)

        def written(_c: mqtt.Client, _u: Any, sock: Any) -> None:
            loop.remove_writer(sock)

        client.on_socket_open = socket_open
        client.on_socket_close = socket_close
        client.on_socket_register_write = want_write
        client.on_socket_unregister_write = written
        self._client = client
        self._network = loop.create_task(self._keep_connected(client, connect), name="mqtt-net")
        log.info(
            "MQTT ingest %s on %s:%s, MQTT %s, %s",
            self.client_id,
            self.address.host,
            self.address.port,
            "5" if caps.protocol == mqtt.MQTTv5 else "3.1.1",
            ", ".join(self._filters),
        )

    async def _keep_connected(self, client: mqtt.Client, connect: Callable[[], Any]) -> None:
        """Connect, then once a second: paho's keepalive (``loop_misc``), and a new connection
        after a pause growing from 1 s to 30 s whenever the last one was lost or refused."""
        delay, waiting = 1.0, 0
        attempt: Callable[[], Any] | None = connect
        while True:
            if attempt is not None:
                try:
                    # A TCP connect and CONNECT (paho's connect timeout, 5 s, at most); the
                    # CONNACK comes through the socket's reader.
                    attempt()
                except Exception as exc:  # never the end of this task: the adapter would stay away
                    if isinstance(exc, OSError):
                        log.warning(
                            "MQTT broker %s not reachable (%s); retrying", self.address.host, exc
                        )
                    else:
                        log.exception("MQTT connection to %s failed; retrying", self.address.host)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                attempt, waiting = None, 0
            await asyncio.sleep(1.0)
            if client.is_connected():
                delay = 1.0
                client.loop_misc()
            elif client.socket() is None or waiting >= CONNACK_WAIT:
                # Lost, refused, or no CONNACK: connect again after the pause.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                attempt = client.reconnect
            else:
                waiting += 1
                client.loop_misc()

    async def disconnect(self) -> None:
        """Disconnect (a DISCONNECT, then the socket closed) and stop reconnecting; nothing
        when never connected."""
        network, self._network = self._network, None
        if network is not None:
            network.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await network
        client, self._client = self._client, None
        if client is None or client.socket() is None:
            return
        client.disconnect()
        for _ in range(100):  # the writer sends the DISCONNECT, then paho closes the socket
            if client.socket() is None:
                return
            await asyncio.sleep(0.01)
        log.warning("MQTT broker %s did not take the DISCONNECT; closing", self.address.host)
        sock = client.socket()
        if sock is not None:
            client.on_socket_close = None
            loop = asyncio.get_running_loop()
            loop.remove_reader(sock)
            loop.remove_writer(sock)
            sock.close()

    # -- paho's callbacks (on the asyncio loop, from its socket's reader) ------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connection refused: %s", reason)
            return
        # Acks of messages of an earlier connection are not sent: the broker delivers them again.
        self._generation += 1
        log.info("MQTT connected (session present: %s)", flags.session_present)
        self._subscribe(client, self._filters)
        if flags.session_present:
            # The session may hold the other form of the subscriptions (shared, or plain) from
            # an earlier run: both would deliver every message twice.
            self._drop_other_form(client)

    def _drop_other_form(self, client: mqtt.Client) -> None:
        group = self.settings.mqtt_share_group or "hivepipe"
        shared = subscriptions(self.settings.mqtt_topic_prefix, group=group)
        plain = subscriptions(self.settings.mqtt_topic_prefix, group=None)
        other = plain if self._filters[0].startswith("$share/") else shared
        client.unsubscribe(other)

    def _subscribe(self, client: mqtt.Client, filters: list[str]) -> None:
        if client.protocol == mqtt.MQTTv5:
            # Retained messages only for a new subscription, not at every reconnection.
            options = SubscribeOptions(qos=1, retainHandling=1)
            client.subscribe([(f, options) for f in filters])
        else:
            client.subscribe([(f, 1) for f in filters])

    def _on_subscribe(
        self, client: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        if any(r.value == _SHARED_NOT_SUPPORTED for r in reasons) and self._filters[0].startswith(
            "$share/"
        ):
            log.warning("the MQTT broker refused shared subscriptions: plain ones instead")
            self._filters = subscriptions(self.settings.mqtt_topic_prefix, group=None)
            self._subscribe(client, self._filters)
            return
        if any(r.is_failure for r in reasons):
            log.error("MQTT subscription refused: %s", ", ".join(str(r) for r in reasons))
            return
        log.info("MQTT subscribed: %s", ", ".join(self._filters))
        self._call(self._subscribed.set)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._call(self._subscribed.clear)
        if not self._stopping:
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_receipt is not None:
            self._on_receipt()
        if not self._accepting:
            return  # not acknowledged: delivered again to this session after the restart
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")
        self._inbox.append(
            Received(
                self._generation,
                message.mid,
                message.qos,
                topic,
                bytes(message.payload),
                time.time(),
            )
        )
        if not self._wake_pending:
            self._wake_pending = True
            self._call(self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        self._wake.set()

    def _call(self, func: Callable[[], Any]) -> None:
        """Run ``func`` on the loop soon (paho calls back from inside its socket's handlers)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon(func)
