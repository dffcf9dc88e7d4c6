"""Usage figures per user and day [readusage]."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import ConnDep, ReadUsage
from api.errors import ApiError
from api.routing import OrjsonRoute
from services.accounts import usage
from services.accounts import users as accounts

router = APIRouter(prefix="/v1/usage", tags=["usage"], route_class=OrjsonRoute)

#: Unix times accepted for ``from``/``to`` (1970 to 2100).
MAX_TIME = 4_102_444_800


class UsageDay(BaseModel):
    user: str
    day: int = Field(description="Unix time of the day's start (00:00 UTC)")
    date: str = Field(description="the same day, YYYY-MM-DD")
    uplinks: int
    points: int
    deliveries: int
    api_requests: int


class UsageOut(BaseModel):
    usage: list[UsageDay]


@router.get("", response_model=UsageOut)
async def get_usage(
    principal: ReadUsage,
    conn: ConnDep,
    from_: Annotated[float | None, Query(alias="from", ge=0, le=MAX_TIME)] = None,
    to: Annotated[float | None, Query(ge=0, le=MAX_TIME)] = None,
) -> Any:
    """Per user and UTC day (default: the last 30 days): uplinks, points, deliveries, requests."""
    try:
        first, last = usage.day_range(from_, to)
    except ValueError as exc:
        raise ApiError(422, "invalid_range", f"Invalid range: {exc}.", details=[]) from exc
    # What this process counted but has not written yet is included.
    await usage.flush(conn)
    user_ids = await accounts.account_user_ids(conn, principal)
    rows = await usage.query_usage(conn, user_ids=user_ids, first=first, last=last)
    return {"usage": rows}
