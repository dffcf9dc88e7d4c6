"""An integrator's users: create, list, read, delete [manageusers]."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.deps import ConnDep, ManageUsers
from api.errors import ApiError
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import users as accounts
from services.devices import store as devices_store

router = APIRouter(prefix="/v1/users", tags=["users"], route_class=OrjsonRoute)


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=accounts.USERNAME.pattern)


class UserOut(BaseModel):
    username: str
    integrator: bool
    parent: str | None = Field(description="the integrator the user belongs to")
    created: int


@router.get("", response_model=list[UserOut])
async def list_users(principal: ManageUsers, conn: ConnDep) -> Any:
    """The integrator's users."""
    rows = await accounts.list_users(conn, parent_id=principal.user_id)
    return [accounts.user_body(row) for row in rows]


@router.post("", status_code=201, response_model=UserOut, responses=error_responses(409))
async def create_user(body: UserIn, principal: ManageUsers, conn: ConnDep) -> Any:
    """Create a user of the integrator (it gets no key: create one with ``user`` set)."""
    try:
        row = await accounts.add_user(
            conn, username=body.username, parent=principal.username, is_integrator=False
        )
    except accounts.UserExists as exc:
        raise ApiError(409, "user_exists", f"The username {body.username!r} is taken.") from exc
    except accounts.InvalidUser as exc:
        raise ApiError(422, "invalid_user", f"Invalid user: {exc}.", details=[]) from exc
    return accounts.user_body(row)


async def _user(conn: ConnDep, principal: Any, username: str) -> dict[str, Any]:
    row = await accounts.users_of(conn, principal, username)
    if row is None:
        raise ApiError(404, "user_not_found", f"No user {username!r}.")
    return row


@router.get("/{username}", response_model=UserOut)
async def get_user(username: str, principal: ManageUsers, conn: ConnDep) -> Any:
    """One of the integrator's users."""
    return accounts.user_body(await _user(conn, principal, username))


@router.delete(
    "/{username}", status_code=204, response_class=Response, responses=error_responses(409)
)
async def delete_user(username: str, principal: ManageUsers, conn: ConnDep) -> Response:
    """Delete a user with its keys (409 while it owns devices: move or delete them first)."""
    row = await _user(conn, principal, username)
    user_id = int(row["id"])
    owned = await devices_store.count_owned(conn, user_id)
    try:
        await accounts.delete_user(conn, user_id, devices_owned=owned)
    except accounts.UserHasDevices as exc:
        raise ApiError(409, "user_has_devices", f"Cannot delete {username!r}: {exc}.") from exc
    return Response(status_code=204)
