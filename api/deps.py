"""Dependencies as Annotated aliases: the context, a connection, the authenticated principal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery
from psycopg import AsyncConnection

from api.context import ApiContext
from api.errors import ApiError
from services.auth.keys import Principal, find_principal

Conn = AsyncConnection[dict[str, Any]]


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]


async def get_conn(ctx: ContextDep) -> AsyncIterator[Conn]:
    async with ctx.pool.connection() as conn:
        yield conn


ConnDep = Annotated[Conn, Depends(get_conn)]

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (64 characters)")
_query = APIKeyQuery(name="apikey", auto_error=False, description="API key as a query parameter")


async def get_principal(
    request: Request,
    ctx: ContextDep,
    header_key: Annotated[str | None, Security(_header)] = None,
    query_key: Annotated[str | None, Security(_query)] = None,
) -> Principal:
    """The key's principal; 401 for a missing, unknown, expired or revoked key."""
    key = header_key or query_key
    if not key:
        raise ApiError(401, "missing_api_key", "An API key is required (X-API-Key header).")
    authenticate = ctx.extras.get("authenticate")
    if authenticate is not None:
        principal: Principal | None = await authenticate(key)
    else:
        async with ctx.pool.connection() as conn:
            principal = await find_principal(conn, key)
    if principal is None:
        raise ApiError(401, "invalid_api_key", "The API key is not valid.")
    if principal.revoked:
        raise ApiError(401, "revoked_api_key", "The API key has been revoked.")
    if principal.expiration is not None and principal.expiration <= datetime.now(UTC):
        raise ApiError(401, "expired_api_key", "The API key has expired.")
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
    return check


def scoped(scope: str) -> Any:
    """``Annotated[Principal, Depends(require(scope))]`` for a route parameter."""
    return Annotated[Principal, Depends(require(scope))]
