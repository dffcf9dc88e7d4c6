"""ingest.http.shortcut: CallbackApp serves the callbacks' hot path before FastAPI's middleware
stack and routing, with the same answers: the body limit, the timing, the contract's error
bodies and the 500 of an unexpected error kept in one place.

The route functions here stand in for the callbacks (``ROUTES`` patched); the real ones go
through the shortcut in tests/integration/test_ingest_callbacks.py."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import Request, Response
from prometheus_client import REGISTRY

from api import ApiError
from ingest.http import shortcut
from ingest.http.shortcut import CallbackApp, Route
from services.platform import metrics
from tests.unit.test_api_body_limit import chunks, json_body

LIMIT = 1024
PATH = "/callbacks/sigfox"


def seconds_count() -> float:
    labels = {"network": "sigfox"}
    return REGISTRY.get_sample_value("hivepipe_callback_seconds_count", labels) or 0.0


def rejected_too_large() -> float:
    labels = {"source": "sigfox", "reason": "payload_too_large"}
    return REGISTRY.get_sample_value("hivepipe_uplinks_rejected_total", labels) or 0.0


async def echo(request: Request, ctx: Any) -> Response:
    """The body's length; ``refuse``: a 422 with details."""
    assert ctx == "the context"
    assert request.app is request.scope["app"]
    body = await request.body()
    if body == b"refuse":
        raise ApiError(422, "invalid", "Invalid content: data.", details=[{"field": "data"}])
    return Response(str(len(body)), status_code=200)


def app_with(monkeypatch: pytest.MonkeyPatch, handler: Any) -> CallbackApp:
    route = Route(handler, metrics.CALLBACK_SECONDS.labels("sigfox"))
    monkeypatch.setitem(shortcut.ROUTES, PATH, route)
    app = CallbackApp(max_body_bytes=LIMIT)
    app.state.ctx = "the context"

    @app.post(PATH)
    @app.post("/callbacks/chirpstack")
    @app.post("/v1/devices")
    async def declared(request: Request) -> dict[str, str]:  # what FastAPI routes to
        return {"routed": request.url.path}

    return app


def client(app: CallbackApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_callback_goes_to_its_function_and_is_timed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = seconds_count()
    async with client(app_with(monkeypatch, echo)) as http:
        answer = await http.post(PATH, content=b"x" * 100)
        assert (answer.status_code, answer.text) == (200, "100")
        answer = await http.post(PATH, content=chunks(b"x" * 600))  # chunked, under the limit
        assert (answer.status_code, answer.text) == (200, "600")
    assert seconds_count() == before + 2


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", PATH, 405), ("POST", "/callbacks/chirpstack", 200), ("POST", "/v1/devices", 200)],
)
async def test_everything_else_takes_the_usual_way(
    monkeypatch: pytest.MonkeyPatch, method: str, path: str, status: int
) -> None:
    async with client(app_with(monkeypatch, echo)) as http:
        answer = await http.request(method, path, content=b"{}")
    assert answer.status_code == status
    if status == 200:
        assert answer.json() == {"routed": path}


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_413(monkeypatch: pytest.MonkeyPatch, chunked: bool) -> None:
    before = rejected_too_large()
    data = json_body(4 * LIMIT)
    async with client(app_with(monkeypatch, echo)) as http:
        answer = await http.post(PATH, content=chunks(data) if chunked else data)
    assert ("content-length" in answer.request.headers) is not chunked
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert rejected_too_large() == before + 1


async def test_an_api_error_has_the_contract_body(monkeypatch: pytest.MonkeyPatch) -> None:
    async with client(app_with(monkeypatch, echo)) as http:
        answer = await http.post(PATH, content=b"refuse")
    assert answer.status_code == 422
    assert answer.json() == {
        "error": {
            "code": "invalid",
            "message": "Invalid content: data.",
            "details": [{"field": "data"}],
        }
    }


async def test_an_unexpected_error_is_a_logged_500(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request, ctx: Any) -> Response:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="api.errors"):
        async with client(app_with(monkeypatch, broken)) as http:
            answer = await http.post(PATH, content=b"{}")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


def test_the_shortcut_routes_are_declared_routes_of_the_same_functions() -> None:
    from services.entrypoints.api_app import create_app
    from services.platform.settings import Settings

    app = create_app(Settings(embedded=True, database_url="-", kafka="-"))
    assert isinstance(app, CallbackApp)
    paths = app.openapi()["paths"]
    for path, route in shortcut.ROUTES.items():
        assert paths[path]["post"]["operationId"].startswith(route.handler.__name__)
