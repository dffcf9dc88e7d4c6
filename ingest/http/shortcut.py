"""The network callbacks' shortcut past FastAPI's routing and dependency resolution.

``POST /callbacks/sigfox`` and ``POST /callbacks/ttn`` are the API's hot path: every uplink of
a deployment, and the Sigfox downlink answer the network waits for. :class:`CallbackShortcut`
hands them straight to the route functions FastAPI would call (``ingest.http.sigfox``,
``ingest.http.lorawan``), with the same
context and the same error bodies. The routes stay declared, so the OpenAPI document and the
behaviour are unchanged; what the shortcut skips (matching the path against every route,
dependency resolution, the exception and exit-stack middlewares, the rate-limit header wrapper:
callbacks are not rate limited) was about a quarter of the API's CPU per callback.

The body limit still applies (the shortcut sits inside it), and an unexpected exception still
reaches the app's 500 handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api import ApiContext, ApiError, api_error_response
from ingest.http.lorawan import ttn_callback
from ingest.http.sigfox import sigfox_callback

Handler = Callable[[Request, ApiContext], Awaitable[Any]]

#: The routes taken by the shortcut: each has the signature ``(request, ctx)`` and nothing else.
ROUTES: dict[str, Handler] = {
    "/callbacks/sigfox": sigfox_callback,
    "/callbacks/ttn": ttn_callback,
}


class CallbackShortcut:
    """ASGI middleware: ``POST`` to one of :data:`ROUTES` goes straight to its function."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request, scope["app"].state.ctx)
        except ApiError as exc:
            response = api_error_response(exc)
        await response(scope, receive, send)
