"""LoRaWAN downlinks: stored, pushed to the network server, listed, cleared [sendcmd]."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from api.codecs import codec_error, model_codec
from api.context import ApiContext, ApiServices
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
from services.codecs import CodecFailure, model_store
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
    port: int | None = Field(
        default=None, ge=1, le=223, description="LoRaWAN FPort (with data: the codec's)"
    )
    payload_hex: str | None = Field(
        default=None,
        min_length=2,
        max_length=484,
        pattern=r"^(?:[0-9A-Fa-f]{2})+$",
        description="1 to 242 bytes",
    )
    data: dict[str, Any] | None = Field(
        default=None,
        description="instead of payload_hex and port: encoded by the model's encodeDownlink",
    )
    confirmed: bool = False

    @model_validator(mode="after")
    def _one_payload(self) -> DownlinkIn:
        if (self.payload_hex is None) == (self.data is None):
            raise ValueError("give either payload_hex (with port) or data")
        if self.payload_hex is not None and self.port is None:
            raise ValueError("port is required with payload_hex")
        return self


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


async def _payload(
    conn: ConnDep, ctx: ApiContext, row: dict[str, Any], body: DownlinkIn
) -> tuple[int, str]:
    """The downlink's FPort and payload: as given, or encoded by the model's codec."""
    if body.data is None:
        assert body.port is not None  # checked by DownlinkIn
        assert body.payload_hex is not None
        return body.port, body.payload_hex.upper()
    model = await model_store.get_model(conn, row["account_id"], row["model"])
    codec = None if model is None else await model_codec(ctx, model)
    if model is None or codec is None or not codec.encodes:
        raise ApiError(
            422,
            "no_encoder",
            f"The model of {row['id']!r} has no encodeDownlink: send payload_hex and port.",
            details=[],
        )
    outcome = await asyncio.to_thread(codec.encode_downlink, body.data)
    if isinstance(outcome, CodecFailure):
        raise codec_error(outcome)
    return body.port or outcome.port, outcome.payload.hex().upper()


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
    """Queue a downlink on the device's network server; the answer is recorded. ``data`` is
    encoded by the ``encodeDownlink`` of the device's model."""
    row = await _lorawan_device(conn, device_id, principal)
    port, payload_hex = await _payload(conn, ctx, row, body)
    server = _server(services)
    try:
        stored = await queue_downlink(
            conn,
            server=server,
            kafka=ctx.publisher,
            kafka_topic=ctx.settings.topic(TOPIC_COMMANDS),
            device=row["id"],
            downlink=Downlink(port=port, payload_hex=payload_hex, confirmed=body.confirmed),
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
