# mypy: disable-error-code="untyped-decorator"
"""The GraphQL mutations: an MQTT command (answered once the device acknowledges it) and Orbit
parameter updates, as their REST routes do them."""

from __future__ import annotations

import time
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.context import Context, Refused, need
from api.graphql.types import ORBIT_MODELS, CommandResult
from services.commands import BrokerUnavailable, CommandInvalid, send_command
from services.devices import visible_device
from services.orbit import InvalidParam
from services.orbit import changes as orbit_changes
from services.orbit import store as orbit_store
from services.platform import TOPIC_COMMANDS


async def _visible(context: Context, device_id: str) -> dict[str, Any]:
    row = await visible_device(context.conn, device_id, context.principal)
    if row is None:
        raise Refused("device_not_found", f"No device {device_id!r}.")
    return row


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Send an MQTT command; returns once acknowledged [sendcmd]")
    async def send_command(
        self, info: Info[Context, None], device: str, payload: JSON
    ) -> CommandResult:
        context = need(info, "sendcmd")
        row = await _visible(context, device)
        if row["network"] != "mqtt":
            raise Refused("commands_not_supported", "This device does not take MQTT commands.")
        settings = context.ctx.settings
        try:
            await send_command(
                mqtt=context.services.commands,
                kafka=context.ctx.publisher,
                topic_prefix=settings.mqtt_topic_prefix,
                kafka_topic=settings.topic(TOPIC_COMMANDS),
                device_id=row["id"],
                payload=payload,
                ack_wait=settings.command_timeout,
            )
        except CommandInvalid as exc:
            raise Refused("invalid_command", f"Invalid command: {exc.reason}.") from exc
        except BrokerUnavailable as exc:
            raise Refused("broker_unavailable", f"The command was not sent: {exc}.") from exc
        return CommandResult(status="Command sent successfully")

    @strawberry.mutation(description="Queue Orbit parameter updates; returns the view [writeorbit]")
    async def queue_orbit_update(
        self, info: Info[Context, None], device: str, params: JSON
    ) -> JSON:
        context = need(info, "writeorbit")
        row = await _visible(context, device)
        if row["model"] not in ORBIT_MODELS:
            raise Refused("not_orbit", "This device is not an Orbit device.")
        if not isinstance(params, dict) or not params:
            raise Refused("invalid_params", "params must be a non-empty object {name: value}.")
        now = time.time()
        # As POST /v1/orbit/dev/{id}: register and announce, then wake the outbox relay.
        try:
            await orbit_changes.register(context.conn, row["id"], params, now)
        except (InvalidParam, TypeError, ValueError) as exc:
            raise Refused("invalid_params", f"Invalid parameters: {exc}.") from exc
        context.ctx.wake_outbox_relay()
        return JSON(await orbit_store.orbit_view(context.conn, row["id"], now))
