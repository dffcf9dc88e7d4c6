"""Device commands: published on MQTT ``{prefix}/{id}/command`` (QoS 1) [sendcmd]."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, WithJsonSchema

from api.deps import ConnDep, ContextDep, SendCmd, ServicesDep, device_or_404
from api.errors import ApiError
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.commands import BrokerUnavailable, CommandInvalid, send_command
from services.platform import TOPIC_COMMANDS

router = APIRouter(prefix="/v1/devices", tags=["commands"], route_class=OrjsonRoute)


class CommandIn(BaseModel):
    # Any JSON here: a payload that is not an object is the contract's 400, not a 422.
    payload: Annotated[
        Any,
        WithJsonSchema(
            {
                "type": "object",
                "description": 'published as is, e.g. {"Output": "Relay", "Relays": [...]}',
            }
        ),
    ] = Field(examples=[{"Output": "Relay", "Relays": [{"relay": "SecurityAlarm", "state": 1}]}])


class CommandOut(BaseModel):
    status: str = Field(examples=["Command sent successfully"])


@router.post(
    "/{device_id}/commands",
    response_model=CommandOut,
    responses=error_responses(400, 503),
)
async def send_device_command(
    device_id: str,
    body: CommandIn,
    principal: SendCmd,
    conn: ConnDep,
    ctx: ContextDep,
    services: ServicesDep,
) -> Any:
    """Send a command; answers once the MQTT broker acknowledged it (QoS 1)."""
    row = await device_or_404(conn, device_id, principal)
    if row["network"] != "mqtt":
        raise ApiError(
            422,
            "commands_not_supported",
            f"Device {row['id']!r} ({row['model']}) does not take MQTT commands.",
            details=[],
        )
    try:
        await send_command(
            mqtt=services.commands,
            kafka=ctx.publisher,
            topic_prefix=ctx.settings.mqtt_topic_prefix,
            kafka_topic=ctx.settings.topic(TOPIC_COMMANDS),
            device_id=row["id"],
            payload=body.payload,
            ack_wait=ctx.settings.command_timeout,
        )
    except CommandInvalid as exc:
        raise ApiError(400, "invalid_command", f"Invalid command: {exc.reason}.") from exc
    except BrokerUnavailable as exc:
        raise ApiError(
            503, "broker_unavailable", f"The command was not sent: {exc}; retry later."
        ) from exc
    return {"status": "Command sent successfully"}
