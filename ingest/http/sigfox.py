"""The Sigfox data callback, and its synchronous downlink answer from PostgreSQL.

A callback with ``ack: true`` is a downlink request: it is answered within the network's few
seconds from the device's Orbit queue (:mod:`services.uplinks.sigfox_downlink`), with its own
connections (``ApiContext.answer_pool``), never waiting for Kafka: the uplink and the
``downlink_sent`` event leave through the outbox.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import Histogram

from api import ApiContext, ApiError, ContextDep, OrjsonRoute
from ingest.http.common import (
    ACCEPTED,
    ERRORS,
    accept,
    bounded,
    check_source,
    check_token,
    json_response,
    keep_refused,
    pipeline_errors,
    read_json,
    validate,
)
from services.orbit import changes
from services.platform import UplinkEnvelope, metrics
from services.uplinks import (
    DB_TIMEOUT,
    DeviceUnavailable,
    DownlinkAnswer,
    SigfoxCallback,
    answer_downlink_request,
    downlink_answer,
)

router = APIRouter(tags=["callbacks"], route_class=OrjsonRoute)

#: The Sigfox network waits a few seconds for a downlink answer: a database connection that
#: takes longer than this is a 503 (the network retries, and the retry gets the same answer).
ANSWER_DB_TIMEOUT = min(DB_TIMEOUT, 2.0)
#: Connections kept for downlink answers alone (``ApiContext.answer_pool``): they never queue
#: for a connection behind the uplink callbacks (which use the API's pool).
ANSWER_POOL_SIZE = 4

ANSWER_SECONDS = Histogram(
    "hivepipe_sigfox_downlink_answer_seconds",
    "Time to answer a Sigfox downlink request of a known device, from PostgreSQL",
    ["answer"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


async def answer_downlink(
    ctx: ApiContext, callback: SigfoxCallback, envelope: UplinkEnvelope
) -> Response:
    """Answer a downlink request of a known, active device: 200 with the frame, or 204.

    Called by :func:`sigfox_callback` inside its error
    handling: a database error is its 503. Kafka is never waited for: the uplink and the
    ``downlink_sent`` event leave through the outbox. Only for a callback with a
    ``seqNumber`` (the answer is idempotent per (device, seqNumber)).
    """
    if callback.seq_number is not None and callback.seq_number > changes.MAX_SIGFOX_SEQ:
        raise ApiError(
            422,
            "invalid",
            "Invalid content: seqNumber.",
            details=[
                {
                    "field": "seqNumber",
                    "message": f"must be at most {changes.MAX_SIGFOX_SEQ}",
                    "type": "less_than_equal",
                }
            ],
        )
    metrics.UPLINKS_RECEIVED.labels("sigfox").inc()
    started = time.perf_counter()
    pool = ctx.answer_pool or ctx.pool

    async def answer_request() -> DownlinkAnswer:
        async with pool.connection(timeout=ANSWER_DB_TIMEOUT) as conn:
            return await answer_downlink_request(
                conn,
                envelope,
                dedup_key=callback.dedup_key,
                window_seconds=ctx.settings.dedup_window_seconds,
                now=float(callback.time),
                keep_journal=ctx.settings.intake_journal,
            )

    answer = await bounded(ctx, answer_request())
    if answer.duplicate:
        metrics.UPLINKS_DUPLICATE.labels("sigfox").inc()
    else:
        ctx.wake_outbox_relay()
    kind = "none" if answer.frame_hex is None else "downlink"
    ANSWER_SECONDS.labels(kind).observe(time.perf_counter() - started)
    if answer.frame_hex is None:
        return Response(status_code=204)
    return json_response(downlink_answer(envelope.device, answer.frame_hex))


@router.post(
    "/sigfox",
    status_code=204,
    response_model=None,
    responses={200: {"description": "a downlink"}, **ACCEPTED, **ERRORS},
)
async def sigfox_callback(request: Request, ctx: ContextDep) -> Any:
    """A Sigfox data callback: 204, or 200 with the downlink when one is requested and due.

    A downlink request without ``seqNumber`` gets no downlink (204; its uplink is accepted as
    any other): a downlink's answer and its Orbit bookkeeping are kept per (device,
    seqNumber), so that a retried request gets the same frame; without one, a retry could
    get a second downlink. The device's queue waits for its next request."""
    check_source(request, ctx.settings.sigfox_allowed_sources, "sigfox")
    check_token(request, ctx.settings.token, "sigfox")
    try:
        callback = validate(SigfoxCallback, await read_json(request, "sigfox"), "sigfox")
    except ApiError as exc:
        await keep_refused(ctx, request, "sigfox", exc)
        raise
    envelope = callback.envelope()
    async with pipeline_errors("sigfox"):
        if callback.ack and callback.seq_number is not None:
            try:
                return await answer_downlink(ctx, callback, envelope)
            except DeviceUnavailable:
                pass  # no downlink for an unknown or deactivated device: dead-lettered below
        await accept(ctx, envelope, callback.dedup_key)
    return Response(status_code=204)
