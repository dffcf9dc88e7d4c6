"""API keys: create (shown once), list, revoke, delete. Keys are never edited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import ConnDep, ManageKeys, ServicesDep
from api.errors import ApiError
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import PRESETS, SCOPES, InvalidScopes, Principal
from services.accounts import keys as key_store
from services.accounts import users as accounts

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=OrjsonRoute)

#: Unix time bounds accepted for an expiration (up to the year 9999).
MAX_TIME = 253_402_300_799


#: A scope or a preset (api-contract.md).
ScopeName = Literal[
    "readdata",
    "readdev",
    "writedev",
    "setdevwebhook",
    "readorbit",
    "writeorbit",
    "sendcmd",
    "readusage",
    "managekeys",
    "manageusers",
    "read-only",
    "read-write",
    "admin",
]
assert set(get_args(ScopeName)) == {*SCOPES, *PRESETS}


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=key_store.KEY_NAME.pattern)
    scopes: list[ScopeName] = Field(
        min_length=1,
        max_length=20,
        description="scopes and/or presets (read-only, read-write, admin)",
        examples=[["read-only"]],
    )
    expiration: float | None = Field(
        default=None, ge=0, le=MAX_TIME, description="Unix time; null: never expires"
    )
    user: str | None = Field(
        default=None, description="one of the integrator's users (needs manageusers)"
    )


class KeyOut(BaseModel):
    name: str
    prefix: str = Field(description="the key's first 6 characters")
    scopes: list[str]
    expiration: int | None
    user: str
    revoked: bool
    created: int
    last_used: int | None


class NewKeyOut(KeyOut):
    key: str = Field(description="the key itself: shown this once, never again")


UserQuery = Annotated[
    str | None,
    Query(max_length=64, description="a key of one of the integrator's users (manageusers)"),
]


async def _owner(conn: ConnDep, principal: Principal, user: str | None) -> tuple[int, bool]:
    """(user id, is integrator) of the keys' owner: the caller, or one of its users."""
    if user is None or user == principal.username:
        return principal.user_id, principal.is_integrator
    if not principal.has("manageusers"):
        raise ApiError(
            403, "missing_scope", "Managing a user's keys needs the 'manageusers' scope."
        )
    row = await accounts.users_of(conn, principal, user)
    if row is None:
        raise ApiError(404, "user_not_found", f"No user {user!r}.")
    return int(row["id"]), bool(row["is_integrator"])


async def _key(conn: ConnDep, principal: Principal, name: str, user: str | None) -> dict[str, Any]:
    user_id, _ = await _owner(conn, principal, user)
    row = await key_store.get_key(conn, user_id=user_id, name=name)
    if row is None:
        raise ApiError(404, "key_not_found", f"No key {name!r}.")
    return row


def _body(row: dict[str, Any], services: ServicesDep) -> dict[str, Any]:
    return key_store.key_body(row, last_used=services.last_used.pending(row["id"]))


@router.get("", response_model=list[KeyOut])
async def list_keys(principal: ManageKeys, conn: ConnDep, services: ServicesDep) -> Any:
    """The caller's keys, and with manageusers those of its users (never the keys themselves)."""
    user_ids = [principal.user_id]
    if principal.is_integrator and principal.has("manageusers"):
        user_ids = await accounts.account_user_ids(conn, principal)
    return [_body(row, services) for row in await key_store.list_keys(conn, user_ids)]


@router.post("", status_code=201, response_model=NewKeyOut, responses=error_responses(404, 409))
async def create_key(
    body: KeyIn, principal: ManageKeys, conn: ConnDep, services: ServicesDep
) -> Any:
    """Create a key; the response is the only time the key is shown."""
    user_id, is_integrator = await _owner(conn, principal, body.user)
    try:
        scopes = key_store.key_scopes(
            body.scopes, is_integrator=is_integrator, granter=principal.scopes
        )
        expiration = (
            None if body.expiration is None else datetime.fromtimestamp(body.expiration, UTC)
        )
        key, row = await key_store.issue_key(
            conn, user_id=user_id, name=body.name, scopes=scopes, expiration=expiration
        )
    except InvalidScopes as exc:
        raise ApiError(422, "invalid_scopes", f"Invalid scopes: {exc}.", details=[]) from exc
    except key_store.ScopeEscalation as exc:
        raise ApiError(
            403, "missing_scope", f"This key cannot grant {', '.join(exc.missing)}."
        ) from exc
    except key_store.InvalidKeyRequest as exc:
        raise ApiError(422, "invalid_key", f"Invalid key: {exc}.", details=[]) from exc
    except key_store.KeyNameTaken as exc:
        raise ApiError(409, "key_exists", f"A key named {body.name!r} already exists.") from exc
    return {**_body(row, services), "key": key}


@router.post("/{name}/revoke", response_model=KeyOut)
async def revoke_key(
    name: str, principal: ManageKeys, conn: ConnDep, services: ServicesDep, user: UserQuery = None
) -> Any:
    """Revoke a key: refused from the very next request on (idempotent)."""
    row = await _key(conn, principal, name, user)
    revoked = await key_store.revoke_key(conn, row["id"])
    if revoked is None:
        raise ApiError(404, "key_not_found", f"No key {name!r}.")
    return _body(revoked, services)


@router.delete(
    "/{name}", status_code=204, response_class=Response, responses=error_responses(400, 409)
)
async def delete_key(
    name: str,
    principal: ManageKeys,
    conn: ConnDep,
    services: ServicesDep,
    confirm: Annotated[str | None, Query(max_length=64, description="the key's name again")] = None,
    force: Annotated[bool, Query(description="delete even if used in the last 3 days")] = False,
    user: UserQuery = None,
) -> Response:
    """Delete a key (``confirm`` repeats its name; ``force`` when used in the last 3 days)."""
    row = await _key(conn, principal, name, user)
    if confirm != name:
        raise ApiError(400, "confirmation_required", f"Add ?confirm={name} to delete this key.")
    used = key_store.last_use(row["last_used"], services.last_used.pending(row["id"]))
    if not force and key_store.recently_used(used):
        raise ApiError(
            409,
            "recently_used",
            "This key was used in the last 3 days; add &force=true to delete it anyway.",
        )
    await key_store.delete_key(conn, row["id"])
    return Response(status_code=204)
