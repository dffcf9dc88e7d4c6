"""Dependencies as Annotated aliases: the context, a connection, the routes' services, the
authenticated principal (:mod:`api.auth`) and the scope a route requires; with the device lookup
and the stored-text check that routes share.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from psycopg import AsyncConnection
from pydantic import AfterValidator

from api.auth import get_principal
from api.context import ApiContext, ApiServices
from api.errors import ApiError
from services.accounts import Principal
from services.devices import visible_device
from services.platform import REQUEST_TIMEOUT

Conn = AsyncConnection[dict[str, Any]]


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


# --- Authentication and scopes ---------------------------------------------------------------

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


# --- Devices and stored text -------------------------------------------------------------------


def device_not_found(device_id: str) -> ApiError:
    """The 404 of a device that does not exist or that the caller may not see."""
    return ApiError(404, "device_not_found", f"No device {device_id!r}.")


async def device_or_404(conn: Conn, device_id: str, principal: Principal) -> dict[str, Any]:
    """The device if the principal may see it; else 404, exactly as for an unknown id."""
    row = await visible_device(conn, device_id, principal)
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


# --- The account's own objects (profile, fleets, places) --------------------------------------


def must_manage_account(principal: Principal, what: str) -> None:
    """403 ``account_owner_only`` unless the principal is its account's own user (the
    integrator, or a standalone user): an integrator's user reads ``what`` but never changes it."""
    if principal.user_id != principal.account_id:
        raise ApiError(
            403, "account_owner_only", f"Only the account's integrator changes its {what}."
        )


#: The id of a fleet or a place in a path (a PostgreSQL bigint: larger is 422, never a 500).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
