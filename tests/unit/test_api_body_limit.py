"""413 for a body over the limit, whether or not it says its length (chunked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import BaseModel

from api.body_limit import BodyLimitMiddleware

LIMIT = 1024


class Body(BaseModel):
    text: str


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/model")
    async def model(body: Body) -> dict[str, int]:  # FastAPI parses the body
        return {"length": len(body.text)}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:  # the route reads the body itself
        return {"length": len(await request.body())}

    app.add_middleware(BodyLimitMiddleware, limit=LIMIT)
    return app


async def chunks(data: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def json_body(length: int) -> bytes:
    return b'{"text": "' + b"x" * length + b'"}'


@pytest.mark.parametrize("path", ["/model", "/raw"])
@pytest.mark.parametrize("chunked", [False, True])
async def test_over_the_limit_is_413(path: str, chunked: bool) -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        data = json_body(4 * LIMIT)
        content: Any = chunks(data) if chunked else data
        answer = await client.post(
            path, content=content, headers={"Content-Type": "application/json"}
        )
        assert ("content-length" in answer.request.headers) is not chunked
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "payload_too_large"
        small = json_body(100)
        content = chunks(small) if chunked else small
        answer = await client.post(
            path, content=content, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 200, answer.text


async def test_a_refused_callback_is_counted_as_a_rejected_uplink() -> None:
    app = make_app()

    @app.post("/callbacks/sigfox")
    async def sigfox(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    def rejected() -> float:
        labels = {"source": "sigfox", "reason": "payload_too_large"}
        return REGISTRY.get_sample_value("hivepipe_uplinks_rejected_total", labels) or 0.0

    before = rejected()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for chunked in (False, True):
            data = json_body(4 * LIMIT)
            answer = await client.post(
                "/callbacks/sigfox", content=chunks(data) if chunked else data
            )
            assert answer.status_code == 413
        assert (await client.post("/model", content=json_body(4 * LIMIT))).status_code == 413
    assert rejected() == before + 2  # the two callbacks, not the API request
