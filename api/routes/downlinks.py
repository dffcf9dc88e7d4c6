"""LoRaWAN downlinks: stored, pushed to the network server, listed, cleared [sendcmd]."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.context import ApiServices
from api.deps import (
    ConnDep,
    ContextDep,
    SendCmd,
    ServicesDep,
    device_or_404,
)
from api.errors import ApiError
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import Principal
from services.downlinks import (
    Downlink,
    NetworkServer,
    NetworkServerFailed,
    clear_downlinks,
    downlink_body,
    list_downlinks,
    queue_downlink,
)
from services.platform import TOPIC_COMMANDS

router = APIRouter(prefix="/v1/devices", tags=["downlinks"], route_class=OrjsonRoute)


class DownlinkIn(BaseModel):
    port: int = Field(ge=1, le=223, description="LoRaWAN FPort")
    payload_hex: str = Field(
        min_length=2, max_length=484, pattern=r"^(?:[0-9A-Fa-f]{2})+$", description="1 to 242 bytes"
    )
    confirmed: bool = False


class AnswerOut(BaseModel):
    status: int = Field(description="the network server's HTTP status")
    body: Any = Field(description="its answer body")


class DownlinkOut(BaseModel):
    id: int
    device: str
    port: int
    payload_hex: str
    confirmed: bool
    status: str = Field(description="pending, queued, failed or cleared")
    network_server: str | None
    answer: AnswerOut | None
    requested: float


class DownlinkList(BaseModel):
    downlinks: list[DownlinkOut]


class ClearedOut(BaseModel):
    cleared: int = Field(description="stored downlinks marked cleared")


async def _lorawan_device(conn: ConnDep, device_id: str, principal: Principal) -> dict[str, Any]:
    row = await device_or_404(conn, device_id, principal)
    if row["network"] != "lorawan":
        raise ApiError(
            422,
            "not_lorawan",
            f"Device {row['id']!r} is not a LoRaWAN device.",
            details=[],
        )
    return row


def _server(services: ApiServices) -> NetworkServer:
    if services.network_server is None:
        raise ApiError(503, "network_server_unavailable", services.network_server_problem + ".")
    return services.network_server


def _failed(exc: NetworkServerFailed) -> ApiError:
    extra = {} if exc.downlink is None else {"downlink": exc.downlink["id"]}
    if exc.retryable:
        return ApiError(
            503, "network_server_unavailable", f"The network server failed: {exc}.", extra=extra
        )
    return ApiError(
        422,
        "network_server_refused",
        f"The network server refused: {exc}.",
        details=[],
        extra=extra,
    )


@router.post(
    "/{device_id}/downlinks",
    status_code=201,
    response_model=DownlinkOut,
    responses=error_responses(503),
)
async def queue_device_downlink(
    device_id: str,
    body: DownlinkIn,
    principal: SendCmd,
    conn: ConnDep,
    ctx: ContextDep,
    services: ServicesDep,
) -> Any:
    """Queue a downlink on the device's network server; the answer is recorded."""
    row = await _lorawan_device(conn, device_id, principal)
    server = _server(services)
    try:
        stored = await queue_downlink(
            conn,
            server=server,
            kafka=ctx.publisher,
            kafka_topic=ctx.settings.topic(TOPIC_COMMANDS),
            device=row["id"],
            downlink=Downlink(
                port=body.port, payload_hex=body.payload_hex.upper(), confirmed=body.confirmed
            ),
            user_id=principal.user_id,
        )
    except NetworkServerFailed as exc:
        raise _failed(exc) from exc
    return downlink_body(stored)


@router.get("/{device_id}/downlinks", response_model=DownlinkList)
async def get_device_downlinks(
    device_id: str,
    principal: SendCmd,
    conn: ConnDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The device's downlinks requested through the API, newest first."""
    row = await _lorawan_device(conn, device_id, principal)
    return {
        "downlinks": [downlink_body(r) for r in await list_downlinks(conn, row["id"], limit=limit)]
    }


@router.delete(
    "/{device_id}/downlinks",
    response_model=ClearedOut,
    responses=error_responses(503),
)
async def clear_device_downlinks(
    device_id: str,
    principal: SendCmd,
    conn: ConnDep,
    ctx: ContextDep,
    services: ServicesDep,
) -> Any:
    """Clear the device's downlink queue on the network server."""
    row = await _lorawan_device(conn, device_id, principal)
    try:
        cleared = await clear_downlinks(
            conn,
            server=_server(services),
            kafka=ctx.publisher,
            kafka_topic=ctx.settings.topic(TOPIC_COMMANDS),
            device=row["id"],
        )
    except NetworkServerFailed as exc:
        raise _failed(exc) from exc
    return {"cleared": cleared}
