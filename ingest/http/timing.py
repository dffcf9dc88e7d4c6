"""How long a network waits for its callback's answer: ``hivepipe_callback_seconds{network}``,
from the request's arrival at the API to the last byte of the answer (the body limit,
FastAPI's routing, the dedup claim, Kafka's acknowledgement: all of it). This middleware times
the callbacks that go through FastAPI's stack (ChirpStack's, and any request to a callback path
but the shortcut's ``POST``); :class:`ingest.http.shortcut.CallbackApp` times its own alike."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.platform import metrics

#: The networks whose callbacks are timed (a label per network; any other path is not).
NETWORKS = ("sigfox", "ttn", "chirpstack")
_PATHS = {f"/callbacks/{network}": network for network in NETWORKS}


class CallbackTiming:
    """ASGI middleware: times the callbacks of :data:`NETWORKS`, passes everything through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        network = _PATHS.get(scope["path"]) if scope["type"] == "http" else None
        if network is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                metrics.CALLBACK_SECONDS.labels(network).observe(time.perf_counter() - started)

        await self.app(scope, receive, timed_send)
