"""Operations: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ContextDep
from api.errors import error_response
from api.responses import OrjsonResponse
from api.routing import OrjsonRoute

router = APIRouter(tags=["operations"], route_class=OrjsonRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"description": "every dependency answers"},
        503: {
            "description": "a dependency is down: the error body, with the checks",
            "content": {
                "application/json": {
                    "example": {
                        "error": {
                            "code": "not_ready",
                            "message": "Not ready: database unreachable.",
                            "checks": {"database": False, "kafka": True},
                        }
                    }
                }
            },
        },
    },
)
async def readyz(ctx: ContextDep) -> Any:
    """Kafka, the database and (where configured) MQTT are reachable."""
    checks: dict[str, bool] = {}
    try:
        async with asyncio.timeout(2), ctx.pool.connection() as conn:
            await conn.execute("SELECT 1")
        checks["database"] = True
    except Exception:
        checks["database"] = False
    checks["kafka"] = bool(await ctx.kafka_ready()) if ctx.kafka_ready else True
    if ctx.mqtt_ready is not None:
        checks["mqtt"] = bool(await ctx.mqtt_ready())
    down = [name for name, up in checks.items() if not up]
    if down:
        return error_response(
            503, "not_ready", f"Not ready: {', '.join(down)} unreachable.", extra={"checks": checks}
        )
    return OrjsonResponse({"status": "ok", "checks": checks})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
