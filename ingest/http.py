"""Network-server callbacks (Sigfox, TTN, ChirpStack), mounted in the API process.

Callbacks are authenticated by the deployment's callback token and are not rate limited.
"""

from __future__ import annotations

import hmac
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, ValidationError

from api.deps import ContextDep
from api.errors import ApiError
from services.events import TOPIC_UPLINKS
from services.ingest.accept import accept_uplink
from services.ingest.sigfox import SigfoxCallback
from services.kafka import PublishFailed

router = APIRouter(prefix="/callbacks", tags=["callbacks"])
M = TypeVar("M", bound=BaseModel)


def check_token(request: Request, expected: str) -> None:
    """401 unless ``X-Callback-Token`` (or ``?token=``) matches, compared in constant time."""
    given = request.headers.get("x-callback-token") or request.query_params.get("token") or ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "invalid_callback_token", "Missing or wrong callback token.")


async def parse_body(request: Request, model: type[M]) -> M:
    """400 for invalid JSON, 422 with the fields for a body of the wrong shape."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "The body must be a JSON object.", details=[])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(p) for p in err["loc"]),
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors()
        ]
        fields = ", ".join(d["field"] or "body" for d in details[:5])
        raise ApiError(422, "invalid", f"Invalid content: {fields}.", details=details) from exc


def unavailable() -> ApiError:
    return ApiError(503, "kafka_unavailable", "The pipeline cannot take uplinks right now; retry.")


@router.post("/sigfox", status_code=204, responses={200: {"description": "a downlink"}})
async def sigfox_callback(request: Request, ctx: ContextDep) -> Any:
    """A Sigfox data callback: 204, or 200 with the downlink when one is requested and due."""
    check_token(request, ctx.settings.token)
    callback = await parse_body(request, SigfoxCallback)
    envelope = callback.envelope()
    planner = ctx.extras.get("sigfox_downlink")
    if callback.ack and planner is not None:
        answer: Any = await planner(ctx, callback, envelope)
        return answer
    try:
        await accept_uplink(
            envelope,
            dedup_key=callback.dedup_key,
            pool=ctx.pool,
            publisher=ctx.publisher,
            topic=ctx.settings.topic(TOPIC_UPLINKS),
            window_seconds=ctx.settings.dedup_window_seconds,
        )
    except PublishFailed as exc:
        raise unavailable() from exc
    return Response(status_code=204)


def json_response(body: Any) -> ORJSONResponse:
    return ORJSONResponse(body, status_code=200)
