"""Orbit device management: read, queue and delete parameter updates; the Sigfox downlink answer.

Changes go through :mod:`services.orbit.changes` (PostgreSQL, their device events in the
outbox); :func:`start` (run in the API's lifespan) starts the outbox relay that publishes them
and plugs :func:`sigfox_downlink` into the Sigfox callback.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from prometheus_client import Histogram
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.context import ApiContext, Pool
from api.deps import (
    ConnDep,
    ContextDep,
    ReadOrbit,
    WriteOrbit,
    device_not_found,
    device_or_404,
)
from api.errors import ApiError
from api.routing import OrjsonRoute
from ingest.http import ingest_publisher, json_response
from services import metrics
from services.auth.keys import Principal
from services.events import UplinkEnvelope
from services.ingest.accept import DB_TIMEOUT
from services.ingest.sigfox import SigfoxCallback, downlink_answer
from services.orbit import changes
from services.orbit.downlink_answer import answer_downlink_request
from services.orbit.params import MODELS, InvalidParam, to_raw
from services.orbit.store import UnknownDevice, orbit_view
from services.outbox import OutboxRelay
from services.storage.db import open_pool

router = APIRouter(prefix="/v1/orbit", tags=["orbit"], route_class=OrjsonRoute)

#: The Sigfox network waits a few seconds for a downlink answer: a database connection that
#: takes longer than this is a 503 (the network retries, and the retry gets the same answer).
ANSWER_DB_TIMEOUT = min(DB_TIMEOUT, 2.0)
#: Connections kept for downlink answers alone: they never queue for a connection behind the
#: uplink callbacks (which use the API's pool).
ANSWER_POOL_SIZE = 4

ANSWER_SECONDS = Histogram(
    "hivepipe_sigfox_downlink_answer_seconds",
    "Time to answer a Sigfox downlink request of a known device, from PostgreSQL",
    ["answer"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class PendingOut(BaseModel):
    param: str
    value: int | float = Field(description="natural units (°C, %RH, minutes...)")
    status: Literal["queued", "in_flight", "failed"]
    queued: int | float = Field(description="when it was registered (Unix seconds)")
    attempts: int = Field(description="sends that went unanswered")
    seq: int | None = Field(description="the downlink it was last sent in")


class OrbitView(BaseModel):
    device: str
    model: str
    active: dict[str, int | float] = Field(description="{name: value} as last acked")
    pending: list[PendingOut]
    downlinks_left_24h: int = Field(ge=0, le=4)


class OrbitUpdated(OrbitView):
    outcomes: dict[str, str] = Field(
        description="{name: what the registration did}: queued, replaced, dropped (the queued"
        " update is gone: the value is the active one), unchanged (the value is the active one"
        " and nothing was pending: nothing is queued)",
        examples=[{"sample_interval": "queued", "led": "unchanged"}],
    )


ParamName = Annotated[str, Field(min_length=1, max_length=64)]


def _number(value: Any) -> Any:
    # Strictly a JSON number, kept as given (30 stays an int: messages echo it as sent).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


ParamValue = Annotated[int | float, BeforeValidator(_number)]


class OrbitUpdates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[ParamName, ParamValue] = Field(
        min_length=1,
        max_length=16,
        description='{name: value} in natural units, e.g. {"sample_interval": 30, "led": 1}',
    )


def _now() -> float:
    return time.time()


async def _orbit_device(conn: ConnDep, device_id: str, principal: Principal) -> dict[str, Any]:
    row = await device_or_404(conn, device_id, principal)
    if row["model"] not in MODELS:
        raise ApiError(404, "not_orbit_device", f"Device {row['id']!r} is not an Orbit device.")
    return row


def _refusals(model: str, params: dict[str, float]) -> list[dict[str, str]]:
    """One 422 detail per refused parameter (the store only says *that* some were refused)."""
    details = []
    for name, value in params.items():
        try:
            to_raw(model, name, value)
        except InvalidParam as exc:
            details.append(
                {"field": f"params.{name}", "message": exc.reason, "type": "invalid_param"}
            )
    return details


def _wake_relay(ctx: ApiContext) -> None:
    relay: OutboxRelay | None = ctx.extras.get("outbox_relay")
    if relay is not None:
        relay.wake()


@router.get("/dev/{device_id}", response_model=OrbitView)
async def get_orbit_device(device_id: str, principal: ReadOrbit, conn: ConnDep) -> Any:
    """The device's active parameter values, its pending updates and its downlink budget."""
    row = await _orbit_device(conn, device_id, principal)
    try:
        return await orbit_view(conn, row["id"], _now())
    except UnknownDevice as exc:  # deleted meanwhile
        raise device_not_found(device_id) from exc


@router.post(
    "/dev/{device_id}",
    status_code=202,
    response_model=OrbitUpdated,
    responses={202: {"description": "registered; sent with the device's next downlinks"}},
)
async def queue_orbit_updates(
    device_id: str, body: OrbitUpdates, principal: WriteOrbit, conn: ConnDep, ctx: ContextDep
) -> Any:
    """Queue parameter updates (all or none); the device gets them when it next asks."""
    row = await _orbit_device(conn, device_id, principal)
    now = _now()
    try:
        outcomes = await changes.register(conn, row["id"], body.params, now)
    except InvalidParam as exc:
        details = _refusals(row["model"], body.params) or [
            {"field": "params", "message": reason, "type": "invalid_param"}
            for reason in exc.details
        ]
        raise ApiError(
            422, "invalid_param", f"Nothing was queued: {exc.reason}.", details=details
        ) from exc
    except UnknownDevice as exc:
        raise device_not_found(device_id) from exc
    _wake_relay(ctx)
    view = await orbit_view(conn, row["id"], now)
    # Rule 1 "nothing is queued; the answer says so": each parameter's outcome.
    view["outcomes"] = {o.param: o.kind.removeprefix("param_") for o in outcomes}
    return view


@router.delete(
    "/dev/{device_id}/pending/{param}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "every pending update of the parameter is deleted"}},
)
async def delete_orbit_pending(
    device_id: str, param: str, principal: WriteOrbit, conn: ConnDep, ctx: ContextDep
) -> Response:
    """Delete the pending updates (queued, in flight or failed) of one parameter."""
    row = await _orbit_device(conn, device_id, principal)
    try:
        deleted = await changes.delete_pending(conn, row["id"], param, _now())
    except InvalidParam as exc:
        raise ApiError(
            422,
            "invalid_param",
            f"Invalid parameter: {exc.reason}.",
            details=[{"field": "param", "message": exc.reason, "type": "invalid_param"}],
        ) from exc
    except UnknownDevice as exc:
        raise device_not_found(device_id) from exc
    if not deleted:
        raise ApiError(404, "nothing_pending", f"No update of {param!r} is pending.")
    _wake_relay(ctx)
    return Response(status_code=204)


# --- The Sigfox downlink request ----------------------------------------------------------


async def sigfox_downlink(
    ctx: ApiContext, callback: SigfoxCallback, envelope: UplinkEnvelope
) -> Response:
    """Answer a downlink request of a known, active device: 200 with the frame, or 204.

    Called by the Sigfox callback (``ctx.extras["sigfox_downlink"]``) inside its error
    handling: a database error is its 503. Kafka is never waited for: the uplink and the
    ``downlink_sent`` event leave through the outbox.
    """
    if callback.seq_number > changes.MAX_SIGFOX_SEQ:
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
    pool: Pool = ctx.extras.get("orbit_answer_pool", ctx.pool)
    async with pool.connection(timeout=ANSWER_DB_TIMEOUT) as conn:
        answer = await answer_downlink_request(
            conn,
            envelope,
            dedup_key=callback.dedup_key,
            window_seconds=ctx.settings.dedup_window_seconds,
            now=float(callback.time),
        )
    if answer.duplicate:
        metrics.UPLINKS_DUPLICATE.labels("sigfox").inc()
    else:
        _wake_relay(ctx)
    kind = "none" if answer.frame_hex is None else "downlink"
    ANSWER_SECONDS.labels(kind).observe(time.perf_counter() - started)
    if answer.frame_hex is None:
        return Response(status_code=204)
    return json_response(downlink_answer(envelope.device, answer.frame_hex))


async def start(ctx: ApiContext) -> None:
    """Lifespan hook: the outbox relay (drains leftovers at once) and the downlink answer with
    its own connections."""
    assert ctx.settings.database_url, "HIVEPIPE_DATABASE_URL is required"
    answer_pool = await open_pool(
        ctx.settings.database_url,
        size=ANSWER_POOL_SIZE,
        name="orbit-answer",
        prepare=ctx.settings.db_prepare,
    )
    relay = OutboxRelay(ctx.pool, ingest_publisher(ctx), ctx.settings.topic)
    relay.start()
    ctx.extras["orbit_answer_pool"] = answer_pool
    ctx.extras["outbox_relay"] = relay
    ctx.extras["sigfox_downlink"] = sigfox_downlink

    async def close() -> None:
        await relay.stop()
        await answer_pool.close()

    ctx.extras.setdefault("closers", []).append(close)
