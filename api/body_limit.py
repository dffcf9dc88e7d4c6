"""Refuse bodies over the configured size with 413 before reading them whole."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from services.platform import metrics

_CALLBACKS = "/callbacks/"
_SOURCES = frozenset({"sigfox", "ttn", "chirpstack"})  # a label each, no more


#: Paths with a larger body limit, whatever ``HIVEPIPE_MAX_BODY_BYTES``: a device model carries
#: a codec source of up to 256 KiB (device-codecs.md), which JSON escaping may double.
LARGER_BODIES: dict[str, int] = {"/v1/models": 640 * 1024}


class BodyTooLarge(Exception):
    pass


def content_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``; None when it has none, or one that is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def refuse_too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """The 413 answer (an uplink's refusal counted with the others)."""
    source = str(scope.get("path", "")).removeprefix(_CALLBACKS)
    if source in _SOURCES:  # an uplink refused: counted with the others
        metrics.UPLINKS_REJECTED.labels(source, "payload_too_large").inc()
    response = error_response(413, "payload_too_large", f"The request body exceeds {limit} bytes.")
    await response(scope, receive, send)


class BodyLimitMiddleware:
    """ASGI middleware: 413 when Content-Length or the streamed body exceeds ``limit`` bytes;
    ``larger`` gives the paths under a prefix a larger limit (the device models' codecs)."""

    def __init__(self, app: ASGIApp, limit: int, larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.larger = dict(LARGER_BODIES if larger is None else larger)

    def _limit(self, path: str) -> int:
        for prefix, limit in self.larger.items():
            if path == prefix or path.startswith(prefix + "/"):
                return max(limit, self.limit)
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(str(scope.get("path", ""))) if self.larger else self.limit
        length = content_length(scope)
        if length is not None:
            if length > limit:
                await refuse_too_large(scope, receive, send, limit)
                return
            # The server delivers exactly Content-Length bytes (what follows is the next
            # request): nothing to count.
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """The app on a body without a (valid) Content-Length, counted as it streams in."""
        received = 0
        started = too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                # Whatever the app answered to the interrupted body (FastAPI catches any error
                # while it parses one, and answers 400), the answer is 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await refuse_too_large(scope, receive, send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await refuse_too_large(scope, receive, send, limit)
