"""The network callbacks' shortcut past FastAPI's middleware stack, routing and dependencies.

``POST /callbacks/sigfox`` and ``POST /callbacks/ttn`` are the API's hot path: every uplink of
a deployment, and the Sigfox downlink answer the network waits for. :class:`CallbackApp` is
the API's FastAPI app, except that it hands these two straight to the route functions FastAPI
would call (``ingest.http.sigfox``, ``ingest.http.lorawan``), with the same context and the
same answers. The routes stay declared, so the OpenAPI document is unchanged.

What the shortcut skips: Starlette's error and exception middlewares, FastAPI's telemetry
wrapper, the timing middleware, matching the path against every route, dependency
resolution, the exit stack, the rate-limit header wrapper (callbacks are not rate limited).
Each layer is a coroutine entered per request and resumed at each of its awaits. What it
keeps:

- the body limit (``HIVEPIPE_MAX_BODY_BYTES``: 413, by Content-Length, or counted as a body
  without one streams in), by the same middleware as every other route, around the answer;
- ``hivepipe_callback_seconds{network}``, the time to the answer's last byte;
- the contract's error bodies, and for an unexpected exception the 500 ``internal_error`` of
  the app's handler, logged with its traceback.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client.metrics import Histogram
from starlette.types import Receive, Scope, Send

from api import (
    ApiContext,
    ApiError,
    BodyLimitMiddleware,
    BodyTooLarge,
    api_error_response,
    internal_error_response,
)
from ingest.http.lorawan import ttn_callback
from ingest.http.sigfox import sigfox_callback
from services.platform import metrics

Handler = Callable[[Request, ApiContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """A route taken by the shortcut: its function (signature ``(request, ctx)`` and nothing
    else) and its network's ``hivepipe_callback_seconds`` series."""

    handler: Handler
    seconds: Histogram


def _route(handler: Handler, network: str) -> Route:
    return Route(handler, metrics.CALLBACK_SECONDS.labels(network))


#: The routes taken by the shortcut, by path (``POST`` only).
ROUTES: dict[str, Route] = {
    "/callbacks/sigfox": _route(sigfox_callback, "sigfox"),
    "/callbacks/ttn": _route(ttn_callback, "ttn"),
}


class CallbackApp(FastAPI):
    """The API's app: FastAPI, with ``POST`` to one of :data:`ROUTES` served by
    :meth:`callback` before the middleware stack; every other request goes through it."""

    def __init__(self, *, max_body_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The body limit of every other route, around the callback's answer alone.
        self._limited = BodyLimitMiddleware(self._answer, limit=max_body_bytes, larger={})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = ROUTES.get(scope["path"])
            if route is not None:
                await self.callback(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def callback(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a callback of ``route``, timed to the answer's last byte."""
        started = time.perf_counter()
        scope["app"] = self  # as FastAPI does: ``request.app``
        await self._limited(scope, receive, send)
        route.seconds.observe(time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await ROUTES[scope["path"]].handler(request, self.state.ctx)
        except ApiError as exc:
            response = api_error_response(exc)
        except BodyTooLarge:
            raise  # a streamed body over the limit: the body limit answers 413
        except Exception:
            # What the app's handler of unexpected errors answers. The connection stays
            # open: the answer is complete.
            response = internal_error_response()
        await response(scope, receive, send)
