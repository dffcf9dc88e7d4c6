"""Request bodies parsed by orjson: faster, and strict (``NaN`` and ``Infinity`` are 400
``invalid_json``, as the contract wants for malformed JSON; Python's ``json`` accepted them).
Every router uses :class:`OrjsonRoute` (``APIRouter(route_class=...)``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


def _not_json(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def loads(body: bytes) -> Any:
    """Parse a request body; raises ``json.JSONDecodeError`` for what is not JSON.

    orjson also refuses some JSON: lone surrogate escapes (``"\\ud800"``) and integers beyond
    64 bits. Those are parsed by ``json`` instead (still without ``NaN`` or ``Infinity``), so that
    their content is checked and refused as content (422), not as syntax."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body, parse_constant=_not_json)


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # A json.JSONDecodeError: FastAPI answers it as malformed JSON (400 invalid_json).
            self._json = loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return route_handler
