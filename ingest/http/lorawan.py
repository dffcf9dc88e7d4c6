"""The LoRaWAN network servers' callbacks: The Things Stack v3 webhooks and ChirpStack v4's
HTTP integration. Uplinks become envelopes on ``uplinks``; downlink reports become device
events; other messages are counted and answered 204."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from api import ApiContext, ApiError, ContextDep, OrjsonRoute
from ingest.http.common import (
    ACCEPTED,
    ERRORS,
    accept,
    accept_event,
    bounded,
    check_token,
    count_event,
    keep_body,
    keep_refused,
    pipeline_errors,
    read_json,
    reject,
    validate,
)
from services.platform import metrics
from services.uplinks import chirpstack, ttn

router = APIRouter(tags=["callbacks"], route_class=OrjsonRoute)
log = logging.getLogger(__name__)


@router.post("/ttn", status_code=204, response_model=None, responses={**ACCEPTED, **ERRORS})
async def ttn_callback(request: Request, ctx: ContextDep) -> Response:
    """A The Things Stack v3 webhook message: uplinks, downlink reports, others counted."""
    check_token(request, ctx.settings.token, "ttn")
    try:
        return await _ttn(request, ctx)
    except ApiError as exc:
        await keep_refused(ctx, request, "ttn", exc)
        raise


async def _ttn(request: Request, ctx: ApiContext) -> Response:
    body = await read_json(request, "ttn")
    kind = ttn.message_type(body)
    async with pipeline_errors("ttn"):
        if kind == ttn.UPLINK:
            uplink = validate(ttn.TtnUplink, body, "ttn")
            await accept(ctx, uplink.envelope(), uplink.dedup_key)
        elif kind in ttn.DOWNLINK_EVENTS:
            report = validate(ttn.TtnDownlinkReport, body, "ttn")
            count_event("ttn", kind)
            if report.missing_device is not None:
                await _keep_unidentified(ctx, request, report.missing_device)
            else:
                await accept_event(ctx, report.device_event(kind), source="ttn")
        else:
            validate(ttn.TtnOther, body, "ttn")
            count_event("ttn", kind or "unknown")
            if kind is None:
                log.info("TTN message of an unknown type (keys: %s)", ", ".join(list(body)[:10]))
    return Response(status_code=204)


async def _keep_unidentified(ctx: ApiContext, request: Request, reason: str) -> None:
    # A valid message of no device of ours (a report without DevEUI): kept with the reason and
    # answered 204, as for an unknown device; Kafka away is a 503 (TTS retries).
    await bounded(ctx, keep_body(ctx, request, "ttn", reason))
    reject("ttn", reason)
    metrics.DEAD_LETTERS.labels(reason).inc()


@router.post(
    "/chirpstack",
    status_code=204,
    response_model=None,
    responses={**ACCEPTED, **ERRORS},
)
async def chirpstack_callback(
    request: Request, ctx: ContextDep, event: str | None = None
) -> Response:
    """A ChirpStack v4 HTTP integration event (``?event=up|ack|txack|join|status|log|...``)."""
    check_token(request, ctx.settings.token, "chirpstack")
    try:
        return await _chirpstack(request, ctx, event)
    except ApiError as exc:
        await keep_refused(ctx, request, "chirpstack", exc)
        raise


async def _chirpstack(request: Request, ctx: ApiContext, event: str | None) -> Response:
    if not event:
        reject("chirpstack", "missing_event")
        raise ApiError(400, "missing_event", "The `event` query parameter is required (?event=up).")
    body = await read_json(request, "chirpstack")
    async with pipeline_errors("chirpstack"):
        if event == chirpstack.UPLINK:
            up = validate(chirpstack.ChirpstackUp, body, "chirpstack")
            await accept(ctx, up.envelope(), up.dedup_key)
        elif event in chirpstack.DEVICE_EVENTS:
            report: chirpstack.ChirpstackAck | chirpstack.ChirpstackTxAck
            if event == "ack":
                report = validate(chirpstack.ChirpstackAck, body, "chirpstack")
            else:
                report = validate(chirpstack.ChirpstackTxAck, body, "chirpstack")
            count_event("chirpstack", event)
            await accept_event(ctx, report.device_event(), source="chirpstack")
        elif event in chirpstack.IGNORED:
            count_event("chirpstack", event)
        else:
            count_event("chirpstack", "unknown")
            log.info("ChirpStack event of an unknown type %r accepted", event[:40])
    return Response(status_code=204)
