# mypy: disable-error-code="untyped-decorator"
"""``POST /graphql``: the account, users, devices with nested readings, state and Orbit
parameters, and mutations for commands and Orbit updates; the same keys and scopes as REST.

Authentication and rate limiting are the REST ones (the request is refused with 401/429 before
the query runs). Each field checks its own scope; a field the key may not read is ``null`` with
an error whose ``extensions.code`` is ``missing_scope``. Errors never carry internals: anything
unexpected becomes ``internal_error`` (and is logged).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import strawberry
from fastapi import APIRouter
from graphql import GraphQLError
from pydantic import BaseModel, Field
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.scalars import JSON
from strawberry.types import ExecutionContext, Info

from api.context import ApiContext, ApiServices
from api.deps import Conn, ConnDep, ContextDep, PrincipalDep, ServicesDep
from api.responses import OrjsonResponse
from api.routing import OrjsonRoute
from services.accounts import users as accounts
from services.accounts.keys import Principal
from services.commands.publishing import BrokerUnavailable, send_command
from services.commands.validation import CommandInvalid
from services.devices import registry
from services.orbit import changes as orbit_changes
from services.orbit import store as orbit_store
from services.orbit.params import InvalidParam
from services.platform.events import TOPIC_COMMANDS
from services.readings import points

log = logging.getLogger(__name__)
router = APIRouter(tags=["graphql"], route_class=OrjsonRoute)

ORBIT_MODELS = frozenset({"orbit-t", "orbit-th", "orbit-lite"})


class Refused(Exception):
    """A GraphQL error the client may see: a code and a message (no internals)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Context:
    principal: Principal
    conn: Conn
    ctx: ApiContext
    services: ApiServices


def _need(info: Info[Context, None], scope: str) -> Context:
    context = info.context
    if not context.principal.has(scope):
        raise Refused("missing_scope", f"This key lacks the {scope!r} scope.")
    return context


@strawberry.type(description="The latest value of one metric")
class Reading:
    device: str
    time: float
    metric: str
    value: float
    unit: str | None


@strawberry.type
class Device:
    id: str
    name: str
    model: str
    network: str
    owner: str
    active: bool
    created: int
    last_seen: float | None

    @strawberry.field(description="The latest point of each metric [readdata]")
    async def readings(self, info: Info[Context, None]) -> list[Reading]:
        context = _need(info, "readdata")
        return [
            Reading(device=p.device, time=p.time, metric=p.metric, value=p.value, unit=p.unit)
            for p in await points.latest_points(context.conn, self.id)
        ]

    @strawberry.field(description="The latest relay-controller state report [readdata]")
    async def state(self, info: Info[Context, None]) -> JSON | None:
        context = _need(info, "readdata")
        latest = await points.latest_state(context.conn, self.id)
        return None if latest is None else JSON(latest[1])

    @strawberry.field(description="Orbit parameters: active and pending [readorbit]")
    async def orbit(self, info: Info[Context, None]) -> JSON | None:
        context = _need(info, "readorbit")
        if self.model not in ORBIT_MODELS:
            return None
        return JSON(await orbit_store.orbit_view(context.conn, self.id, time.time()))


def _device(row: dict[str, Any]) -> Device:
    return Device(**registry.device_body(row))


@strawberry.type
class User:
    username: str
    integrator: bool
    parent: str | None
    created: int


@strawberry.type
class Account:
    username: str
    integrator: bool
    scopes: list[str]
    rate_per_minute: int
    rate_per_day: int


@strawberry.type
class Query:
    @strawberry.field(description="The key's user and its account's limits")
    def account(self, info: Info[Context, None]) -> Account:
        context = info.context
        p, settings = context.principal, context.ctx.settings
        return Account(
            username=p.username,
            integrator=p.is_integrator,
            scopes=sorted(p.scopes),
            rate_per_minute=p.rate_per_minute or settings.rate_limit_per_minute,
            rate_per_day=p.rate_per_day or settings.rate_limit_per_day,
        )

    @strawberry.field(description="The integrator's users [manageusers]")
    async def users(self, info: Info[Context, None]) -> list[User]:
        context = _need(info, "manageusers")
        rows = await accounts.list_users(context.conn, parent_id=context.principal.user_id)
        return [User(**accounts.user_body(row)) for row in rows]

    @strawberry.field(description="Every visible device [readdev]")
    async def devices(self, info: Info[Context, None]) -> list[Device]:
        context = _need(info, "readdev")
        rows = await registry.list_devices(context.conn, context.principal)
        return [_device(row) for row in rows]

    @strawberry.field(description="One device, null when not visible [readdev]")
    async def device(self, info: Info[Context, None], id: str) -> Device | None:
        context = _need(info, "readdev")
        row = await registry.visible_device(context.conn, id, context.principal)
        return None if row is None else _device(row)


async def _visible(context: Context, device_id: str) -> dict[str, Any]:
    row = await registry.visible_device(context.conn, device_id, context.principal)
    if row is None:
        raise Refused("device_not_found", f"No device {device_id!r}.")
    return row


@strawberry.type
class CommandResult:
    status: str


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Send an MQTT command; returns once acknowledged [sendcmd]")
    async def send_command(
        self, info: Info[Context, None], device: str, payload: JSON
    ) -> CommandResult:
        context = _need(info, "sendcmd")
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
        context = _need(info, "writeorbit")
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


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if _kind(error) == "internal":
                log.error("GraphQL resolver failed", exc_info=error.original_error)


schema = _Schema(
    query=Query,
    mutation=Mutation,
    # Factories: a fresh instance per request.
    extensions=[
        lambda: QueryDepthLimiter(max_depth=6),
        lambda: MaxAliasesLimiter(max_alias_count=20),
        lambda: MaxTokensLimiter(max_token_count=2000),
    ],
)


def _kind(error: GraphQLError) -> str:
    """``refused`` (a resolver's :class:`Refused`), ``invalid`` (the request: syntax,
    validation, a variable of the wrong type; such errors have no path, being found before any
    field runs) or ``internal`` (a field's resolver failed)."""
    if isinstance(error.original_error, Refused):
        return "refused"
    if error.original_error is None or not error.path:
        return "invalid"
    return "internal"


def _error(error: GraphQLError) -> dict[str, Any]:
    kind = _kind(error)
    if kind == "invalid":
        code, message = "invalid_query", error.message
    elif kind == "refused":
        assert isinstance(error.original_error, Refused)
        code, message = error.original_error.code, str(error.original_error)
    else:
        code, message = "internal_error", "An internal error occurred."
    body: dict[str, Any] = {"message": message, "extensions": {"code": code}}
    if error.locations:
        body["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        body["path"] = list(error.path)
    return body


class GraphQLRequest(BaseModel):
    query: str = Field(
        min_length=1, max_length=20_000, examples=["{ devices { id readings { metric value } } }"]
    )
    variables: dict[str, Any] | None = None
    #: The GraphQL-over-HTTP spelling.
    operationName: str | None = Field(default=None, max_length=200)


class GraphQLResponse(BaseModel):
    data: dict[str, Any] | None
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="present only when there are errors"
    )


@router.post("/v1/graphql", response_model=GraphQLResponse)
@router.post("/graphql", response_model=GraphQLResponse, summary="Graphql (alias of /v1/graphql)")
async def graphql(
    body: GraphQLRequest,
    principal: PrincipalDep,
    conn: ConnDep,
    ctx: ContextDep,
    services: ServicesDep,
) -> Any:
    """Run a GraphQL query or mutation (each field checks its scope)."""
    result = await schema.execute(
        body.query,
        variable_values=body.variables,
        context_value=Context(principal=principal, conn=conn, ctx=ctx, services=services),
        operation_name=body.operationName,
    )
    response: dict[str, Any] = {"data": result.data}
    if result.errors:
        response["errors"] = [_error(error) for error in result.errors]
    # As is: "data" stays when null, "errors" only when there are some (GraphQL over HTTP).
    return OrjsonResponse(response)
