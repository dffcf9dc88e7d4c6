"""ingest.http.shortcut: the callbacks' hot path skips FastAPI's routing, with the same answers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi import Request, Response
from starlette.types import Message, Receive, Scope, Send

from api.errors import ApiError
from ingest.http import shortcut as shortcuts


class Inner:
    """The rest of the app: records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await Response(status_code=418)(scope, receive, send)


async def call(app: Any, method: str, path: str, body: bytes = b"{}") -> tuple[int, bytes]:
    ctx = SimpleNamespace(name="the context")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [],
        "query_string": b"",
        "app": SimpleNamespace(state=SimpleNamespace(ctx=ctx)),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, str]]:
    seen: list[tuple[bytes, str]] = []

    async def handler(request: Request, ctx: Any) -> Response:
        body = await request.body()
        seen.append((body, ctx.name))
        if body == b"refuse":
            raise ApiError(422, "invalid", "Invalid content: data.", details=[{"field": "data"}])
        return Response(status_code=204)

    monkeypatch.setitem(shortcuts.ROUTES, "/callbacks/sigfox", handler)
    return seen


async def test_a_callback_goes_straight_to_its_route_function(
    handled: list[tuple[bytes, str]],
) -> None:
    inner = Inner()
    status, _ = await call(shortcuts.CallbackShortcut(inner), "POST", "/callbacks/sigfox", b"{1}")
    assert status == 204
    assert handled == [(b"{1}", "the context")]
    assert inner.paths == []


async def test_its_errors_have_the_contract_body(handled: list[tuple[bytes, str]]) -> None:
    status, body = await call(
        shortcuts.CallbackShortcut(Inner()), "POST", "/callbacks/sigfox", b"refuse"
    )
    assert status == 422
    assert orjson.loads(body) == {
        "error": {
            "code": "invalid",
            "message": "Invalid content: data.",
            "details": [{"field": "data"}],
        }
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/callbacks/sigfox"), ("POST", "/callbacks/chirpstack"), ("POST", "/v1/devices")],
)
async def test_everything_else_takes_the_usual_way(
    handled: list[tuple[bytes, str]], method: str, path: str
) -> None:
    inner = Inner()
    status, _ = await call(shortcuts.CallbackShortcut(inner), method, path)
    assert (status, inner.paths, handled) == (418, [path], [])


def test_the_shortcut_routes_are_declared_routes_of_the_same_functions() -> None:
    from services.entrypoints.api_app import create_app
    from services.platform.settings import Settings

    paths = create_app(Settings(embedded=True, database_url="-", kafka="-")).openapi()["paths"]
    for path, function in shortcuts.ROUTES.items():
        assert paths[path]["post"]["operationId"].startswith(function.__name__)
