"""A device's webhooks: registered, listed, deleted; their recent attempts, redelivery
[setdevwebhook]. Only the device's owner manages them (an integrator: 403
``integrator_webhooks_forbidden``); see docs/webhooks.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.context import ApiContext
from api.deps import (
    ConnDep,
    ContextDep,
    SetDevWebhook,
    StorableText,
    device_or_404,
)
from api.errors import ApiError
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import Principal
from services.webhooks import (
    TooManyWebhooks,
    WebhookExists,
    WebhookRules,
    WebhookURLError,
    create_webhook,
    delete_webhook,
    delivery_body,
    generate_secret,
    get_webhook,
    list_deliveries,
    list_webhooks,
    schedule_redelivery,
    validate_webhook_url,
    webhook_body,
)

router = APIRouter(prefix="/v1/devices", tags=["webhooks"], route_class=OrjsonRoute)

_MAX_ID = 2**63 - 1


class WebhookIn(BaseModel):
    url: StorableText = Field(description="https:// URL of the receiver (docs/webhooks.md)")


class WebhookCreated(BaseModel):
    id: int
    url: str = Field(description="the URL in normalised form")
    secret: str = Field(description="the signing secret (whsec_...), shown only this once")


class WebhookOut(BaseModel):
    id: int
    url: str
    created: int
    disabled: bool
    disabled_at: float | None
    disabled_reason: str | None = Field(description="why the webhook stopped receiving")
    consecutive_failures: int = Field(description="failed attempts since the last delivery")
    failing_since: float | None
    failures: int = Field(description="failed attempts, ever")
    last_failure: float | None
    last_error: str | None
    pending_retries: int = Field(description="data points waiting for another attempt")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: int
    time: float = Field(description="when the attempt started")
    attempt: int = Field(description="1 for a data point's first attempt")
    outcome: str = Field(description="delivered, retry, gone or failed: the answer's class")
    result: str = Field(description="delivered, retrying, dead (dead-lettered) or disabled")
    status: int | None = Field(description="the receiver's HTTP status; null without answer")
    latency_ms: float | None
    error: str | None
    message_id: str = Field(description="the webhook-id header")


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


class RedeliveryOut(BaseModel):
    scheduled: bool
    message_id: str


def _rules(ctx: ApiContext) -> WebhookRules:
    s = ctx.settings
    return WebhookRules(
        allow_http=s.webhook_allow_http,
        allowed_cidrs=s.webhook_allowed_cidrs,
        max_url_length=s.webhook_max_url_length,
    )


async def _owned_device(conn: ConnDep, device_id: str, principal: Principal) -> dict[str, Any]:
    """The device, if the caller is its owner; 404 when not visible, 403 for an integrator."""
    row = await device_or_404(conn, device_id, principal)
    if principal.is_integrator:
        raise ApiError(
            403,
            "integrator_webhooks_forbidden",
            "Integrators cannot manage webhooks: set one of your users as the device's owner;"
            " that user manages its webhooks.",
        )
    return row


def _id(value: str) -> int | None:
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return number if 0 < number <= _MAX_ID else None


async def _webhook(
    conn: ConnDep, row: dict[str, Any], webhook_id: str, principal: Principal
) -> dict[str, Any]:
    number = _id(webhook_id)
    found = (
        None
        if number is None
        else await get_webhook(
            conn, webhook_id=number, device=row["id"], owner_id=principal.user_id
        )
    )
    if found is None:
        raise ApiError(404, "webhook_not_found", f"No webhook {webhook_id!r} on this device.")
    return found


@router.get(
    "/{device_id}/webhooks", response_model=WebhookList, responses=error_responses(403, 404)
)
async def get_device_webhooks(device_id: str, principal: SetDevWebhook, conn: ConnDep) -> Any:
    """The device's webhooks (without their secrets), with their health."""
    row = await _owned_device(conn, device_id, principal)
    rows = await list_webhooks(conn, device=row["id"], owner_id=principal.user_id)
    return {"webhooks": [webhook_body(r) for r in rows]}


@router.post(
    "/{device_id}/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    responses=error_responses(403, 404, 409, 422),
)
async def add_device_webhook(
    device_id: str, body: WebhookIn, principal: SetDevWebhook, conn: ConnDep, ctx: ContextDep
) -> Any:
    """Register a webhook; the answer holds its signing secret, shown this once."""
    row = await _owned_device(conn, device_id, principal)
    try:
        target = await validate_webhook_url(
            body.url, rules=_rules(ctx), resolve=ctx.webhook_resolver.resolve
        )
    except WebhookURLError as exc:
        raise ApiError(
            422,
            exc.code,
            f"The URL is refused: {exc.reason}.",
            details=[{"field": "url", "message": exc.reason, "type": exc.code}],
        ) from exc
    except ValueError as exc:  # anything the parser chokes on is an invalid URL, never a 500
        raise ApiError(
            422,
            "invalid_url",
            "The URL cannot be parsed.",
            details=[{"field": "url", "message": "cannot be parsed", "type": "invalid_url"}],
        ) from exc
    secret = generate_secret()
    try:
        created = await create_webhook(
            conn,
            device=row["id"],
            owner_id=principal.user_id,
            url=target.url,
            secret=secret,
            max_per_device=ctx.settings.webhook_max_per_device,
        )
    except TooManyWebhooks as exc:
        raise ApiError(409, "too_many_webhooks", f"{exc}; delete one first.") from exc
    except WebhookExists as exc:
        raise ApiError(409, "webhook_exists", f"{exc}.") from exc
    return {"id": created["id"], "url": created["url"], "secret": secret}


@router.delete(
    "/{device_id}/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(403, 404),
)
async def remove_device_webhook(
    device_id: str, webhook_id: str, principal: SetDevWebhook, conn: ConnDep
) -> Response:
    """Delete a webhook, its queued retries and its recorded attempts."""
    row = await _owned_device(conn, device_id, principal)
    found = await _webhook(conn, row, webhook_id, principal)
    await delete_webhook(conn, webhook_id=found["id"], device=row["id"], owner_id=principal.user_id)
    return Response(status_code=204)


@router.get(
    "/{device_id}/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses=error_responses(403, 404),
)
async def get_webhook_deliveries(
    device_id: str,
    webhook_id: str,
    principal: SetDevWebhook,
    conn: ConnDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=_MAX_ID, description="ids below")] = None,
) -> Any:
    """The webhook's recent attempts, newest first (the last 1,000 at most, 7 days)."""
    row = await _owned_device(conn, device_id, principal)
    found = await _webhook(conn, row, webhook_id, principal)
    rows = await list_deliveries(conn, webhook_id=found["id"], limit=limit, before=before)
    return {"deliveries": [delivery_body(r) for r in rows]}


@router.post(
    "/{device_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=RedeliveryOut,
    responses=error_responses(403, 404, 409),
)
async def redeliver(
    device_id: str, webhook_id: str, delivery_id: str, principal: SetDevWebhook, conn: ConnDep
) -> Any:
    """Send a recorded attempt's data point again (queued, due now; same webhook-id)."""
    row = await _owned_device(conn, device_id, principal)
    found = await _webhook(conn, row, webhook_id, principal)
    if found["disabled_at"] is not None:
        raise ApiError(
            409,
            "webhook_disabled",
            "The webhook is disabled; delete it and register it again to resume deliveries.",
        )
    number = _id(delivery_id)
    queued = (
        None
        if number is None
        else await schedule_redelivery(conn, webhook_id=found["id"], delivery_id=number)
    )
    if queued is None:
        raise ApiError(404, "delivery_not_found", f"No delivery {delivery_id!r} of this webhook.")
    return {"scheduled": True, "message_id": queued["message_id"]}
