"""JSON responses rendered by orjson (FastAPI's own OrjsonResponse is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """A JSON response serialised with orjson (fast, and handles dataclasses)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
