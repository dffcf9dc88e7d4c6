"""Authentication and admission: the API key to its principal, then the account's rate limits.

Authentication looks the key up on every request (one index probe on its hash: a revoke is
effective on the very next request, with no cache to invalidate), then counts the request
against the account's rate limits, notes the key's ``last_used`` and the user's API usage in
memory (written in batches by :func:`api.lifespan.start_api_services`'s flusher, never per
request).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery

from api.context import ApiContext, ApiServices
from api.errors import ApiError
from api.ratelimit import STATE_KEY
from services.accounts import Principal, find_principal, usage
from services.platform import REQUEST_TIMEOUT

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
