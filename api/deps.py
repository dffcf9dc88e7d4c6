"""Dependencies as Annotated aliases: the context, a connection, the authenticated principal.

Authentication looks the key up on every request (one index probe on its hash: a revoke is
effective on the very next request, with no cache to invalidate), then counts the request
against the account's rate limits, notes the key's ``last_used`` and the user's API usage in
memory (written in batches by :func:`start_api_services`'s flusher, never per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.security import APIKeyHeader, APIKeyQuery
from psycopg import AsyncConnection
from pydantic import AfterValidator, BaseModel, Field

from api.context import ApiContext, ApiServices
from api.errors import ApiError
from api.ratelimit import STATE_KEY, AccountLimiter, RateLimitHeaders
from services.accounts import usage
from services.accounts.keys import Principal, find_principal
from services.accounts.last_used import LastUsed
from services.commands.publishing import CommandPublisher, NoBroker, PahoCommandPublisher
from services.devices import registry
from services.downlinks import network_servers
from services.downlinks.network_servers import NetworkServer
from services.platform.db import REQUEST_TIMEOUT

log = logging.getLogger(__name__)

Conn = AsyncConnection[dict[str, Any]]
#: Seconds between two writes of the buffered ``last_used`` times and usage counters.


# Dependencies are ``async def`` even when they do not await: FastAPI runs a plain ``def``
# dependency in a worker thread, a hop that costs more than the whole key lookup.
async def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]


async def get_conn(ctx: ContextDep) -> AsyncIterator[Conn]:
    async with ctx.pool.connection(timeout=REQUEST_TIMEOUT) as conn:
        yield conn


ConnDep = Annotated[Conn, Depends(get_conn)]


# --- What the API process holds for its routes ---------------------------------------------


async def get_services(ctx: ContextDep) -> ApiServices:
    return ctx.api_services()


ServicesDep = Annotated[ApiServices, Depends(get_services)]


async def flush_buffers(ctx: ApiContext, services: ApiServices) -> None:
    """Write the pending ``last_used`` times and usage counters (one connection, two statements)."""
    async with ctx.pool.connection() as conn:
        await services.last_used.flush(conn)
        await usage.flush(conn)


async def _flush_forever(ctx: ApiContext, services: ApiServices) -> None:
    while True:
        await asyncio.sleep(ctx.settings.stats_flush_seconds)
        try:
            await flush_buffers(ctx, services)
        except Exception:
            log.warning("could not write last_used/usage; kept for the next flush", exc_info=True)


async def start_api_services(ctx: ApiContext) -> None:
    """Open the limiter, the MQTT command publisher, the network server; start the flusher."""
    settings = ctx.settings
    commands: CommandPublisher
    if settings.mqtt_url:
        paho = PahoCommandPublisher(settings.mqtt_url)
        paho.start()
        # Start ready when the broker is up; when it is not, start anyway (commands are 503
        # and /readyz says so until paho's reconnect succeeds).
        if not await paho.wait_connected(3.0):
            log.warning("MQTT broker not reachable yet; commands answer 503 until it is")
        commands = paho

        async def mqtt_ready() -> bool:
            return paho.connected

        ctx.mqtt_ready = mqtt_ready
    else:
        commands = NoBroker()
    problem = "no LoRaWAN network server is configured (HIVEPIPE_LORAWAN_SERVER)"
    server: NetworkServer | None = None
    try:
        server = network_servers.from_settings(settings)
    except network_servers.NotConfigured as exc:
        problem = f"the LoRaWAN network server is not fully configured: {exc}"
        log.error(problem)
    services = ApiServices(
        limiter=AccountLimiter(
            settings.rate_limit_storage,
            per_minute=settings.rate_limit_per_minute,
            per_day=settings.rate_limit_per_day,
        ),
        last_used=LastUsed(),
        commands=commands,
        network_server=server,
        network_server_problem=problem,
    )
    ctx.services = services
    flusher = asyncio.create_task(_flush_forever(ctx, services))

    async def close() -> None:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        try:
            await flush_buffers(ctx, services)
        except Exception:
            log.warning("could not write last_used/usage at shutdown", exc_info=True)
        await services.commands.close()
        if services.network_server is not None:
            await services.network_server.close()

    ctx.closers.append(close)


# --- Authentication and rate limiting ---------------------------------------------------------

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (64 characters)")
_query = APIKeyQuery(name="apikey", auto_error=False, description="API key as a query parameter")


async def authenticate(ctx: ApiContext, key: str | None) -> Principal:
    """The key's principal; 401 for a missing, unknown, expired or revoked key."""
    if not key:
        raise ApiError(401, "missing_api_key", "An API key is required (X-API-Key header).")
    async with ctx.pool.connection(timeout=REQUEST_TIMEOUT) as conn:
        principal = await find_principal(conn, key)
    if principal is None:
        raise ApiError(401, "invalid_api_key", "The API key is not valid.")
    if principal.revoked:
        raise ApiError(401, "revoked_api_key", "The API key has been revoked.")
    if principal.expiration is not None and principal.expiration <= datetime.now(UTC):
        raise ApiError(401, "expired_api_key", "The API key has expired.")
    return principal


async def admit(services: ApiServices, principal: Principal, state: dict[str, Any]) -> None:
    """Count the request against the account's limits (429 when over); note usage and last_used.

    The window is left in ``state`` for the ``X-RateLimit-*`` headers of whatever response
    follows.
    """
    decision = await services.limiter.hit(
        principal.account_id,
        per_minute=principal.rate_per_minute,
        per_day=principal.rate_per_day,
    )
    if decision.window is not None:
        state[STATE_KEY] = decision.window
    if not decision.allowed:
        assert decision.window is not None
        retry = decision.window.retry_after()
        raise ApiError(
            429,
            "rate_limited",
            f"Rate limit of {decision.window.limit} requests exceeded; retry in {retry} s.",
            headers={"Retry-After": str(retry)},
            extra={"retry_after": retry},
        )
    services.last_used.touch(principal.key_id)
    usage.count(principal.user_id, "api_requests")


async def get_principal(
    request: Request,
    header_key: Annotated[str | None, Security(_header)] = None,
    query_key: Annotated[str | None, Security(_query)] = None,
) -> Principal:
    """Authenticate, then admit the request under the account's rate limits."""
    # The context straight from the app, not through ContextDep: one sub-dependency less to
    # resolve on every request (FastAPI's resolution is a fair share of this path's cost).
    ctx: ApiContext = request.app.state.ctx
    principal = await authenticate(ctx, header_key or query_key)
    await admit(ctx.api_services(), principal, request.scope.setdefault("state", {}))
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that authenticates and checks ``scope`` (403 ``missing_scope`` otherwise)."""

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.has(scope):
            raise ApiError(403, "missing_scope", f"This key lacks the {scope!r} scope.")
        return principal

    check.__name__ = f"require_{scope}"
    check.required_scope = scope  # type: ignore[attr-defined]
    return check


def scoped(scope: str) -> Any:
    """``Annotated[Principal, Depends(require(scope))]`` for a route parameter."""
    return Annotated[Principal, Depends(require(scope))]


# One alias per scope (type checkers accept these as types, unlike ``scoped(...)``'s result).
ReadData = Annotated[Principal, Depends(require("readdata"))]
ReadDev = Annotated[Principal, Depends(require("readdev"))]
WriteDev = Annotated[Principal, Depends(require("writedev"))]
SetDevWebhook = Annotated[Principal, Depends(require("setdevwebhook"))]
ReadOrbit = Annotated[Principal, Depends(require("readorbit"))]
WriteOrbit = Annotated[Principal, Depends(require("writeorbit"))]
SendCmd = Annotated[Principal, Depends(require("sendcmd"))]
ReadUsage = Annotated[Principal, Depends(require("readusage"))]
ManageKeys = Annotated[Principal, Depends(require("managekeys"))]
ManageUsers = Annotated[Principal, Depends(require("manageusers"))]


def device_not_found(device_id: str) -> ApiError:
    """The 404 of a device that does not exist or that the caller may not see."""
    return ApiError(404, "device_not_found", f"No device {device_id!r}.")


async def device_or_404(conn: Conn, device_id: str, principal: Principal) -> dict[str, Any]:
    """The device if the principal may see it; else 404, exactly as for an unknown id."""
    row = await registry.visible_device(conn, device_id, principal)
    if row is None:
        raise device_not_found(device_id)
    return row


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded: both are 422.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


#: Free text that will be stored (names, descriptions).
StorableText = Annotated[str, AfterValidator(_storable)]


# --- The error body in the OpenAPI document -----------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case error code")
    message: str = Field(description="a human sentence")
    details: list[dict[str, Any]] | None = Field(default=None, description="422: the fields")
    retry_after: int | None = Field(default=None, description="429: seconds to wait")


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message"[, "details"]}}``."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, invalid, expired or revoked API key",
    403: "The key lacks the scope",
    404: "Not found (or not visible to this key)",
    409: "Conflict",
    413: "Body too large",
    422: "Valid JSON, invalid content",
    429: "Rate limit exceeded",
    500: "Internal error",
    503: "A dependency is down",
}
_RATE_HEADERS = {
    "X-RateLimit-Limit": {"schema": {"type": "integer"}, "description": "requests per window"},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "left in window"},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "Unix time of reset"},
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses with the error body."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


_REF = "#/components/schemas/{model}"


def _error_ref(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if code == 429:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"},
            **_RATE_HEADERS,
        }
    return response


def document_errors(app: FastAPI) -> None:
    """Declare the contract's common errors on every operation of the OpenAPI document.

    Any operation may answer 500; one with a body 400, 413 and 422; one with parameters 422;
    one with a path parameter 404; an authenticated one 401, 403 and 429 (and every answer of
    an authenticated one carries the ``X-RateLimit-*`` headers). Routes declare the rest
    (409, 503, ...) themselves.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["ErrorBody"] = ErrorBody.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas.update(schemas["ErrorBody"].pop("$defs", {}))
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                _add_errors(operation)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_errors(operation: dict[str, Any]) -> None:
    params = operation.get("parameters", [])
    secured = bool(operation.get("security"))
    codes = {500}
    if "requestBody" in operation:
        codes |= {400, 413, 422}
    if params:
        codes.add(422)
    if any(p.get("in") == "path" for p in params):
        codes.add(404)
    if secured:
        codes |= {401, 403, 429}
    responses = operation.setdefault("responses", {})
    for code in sorted(codes):
        responses.setdefault(str(code), _error_ref(code))
    if secured:
        for response in responses.values():
            response.setdefault("headers", {})
            for name, header in _RATE_HEADERS.items():
                response["headers"].setdefault(name, header)


def install(app: FastAPI) -> None:
    """The API's own wiring of the app: rate-limit headers and the documented errors."""
    app.add_middleware(RateLimitHeaders)
    document_errors(app)
