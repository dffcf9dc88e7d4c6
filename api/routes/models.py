"""Device models: the built-in ones (read-only) and the account's own, with their JavaScript
codec; the codec's "test" routes (decode, encode) [readdev / writedev]."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.codecs import codec_error, compile_or_422, model_codec
from api.deps import ConnDep, ContextDep, ReadDev, WriteDev
from api.errors import ApiError
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import Principal
from services.codecs import (
    CodecFailure,
    DeviceModel,
    ModelExists,
    ModelInUse,
    UplinkInput,
    flatten_points,
    model_store,
)
from services.devices import ids

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=OrjsonRoute)

#: A model's id (device-codecs.md): lower-case letters, digits and ``-``, 2 to 64.
MODEL_ID = r"^[a-z0-9-]{2,64}$"
#: The largest codec source (device-codecs.md); the models routes' body limit allows it.
MAX_SOURCE_BYTES = 256 * 1024
Network = Literal["lorawan", "mqtt", "sigfox"]


class CodecIn(BaseModel):
    language: Literal["javascript"] = "javascript"
    source: str = Field(min_length=1, max_length=MAX_SOURCE_BYTES, description="at most 256 KiB")


class ModelBody(BaseModel):
    network: Network
    codec: CodecIn
    units: dict[str, str] = Field(default_factory=dict, description="metric -> unit")
    variables: dict[str, Any] = Field(
        default_factory=dict, description="ChirpStack's variables, as input.variables"
    )


class ModelIn(ModelBody):
    id: str = Field(pattern=MODEL_ID, description="lower-case [a-z0-9-], 2 to 64")


class CodecOut(BaseModel):
    language: str
    source: str


class ModelOut(BaseModel):
    id: str
    network: str
    builtin: bool
    codec: CodecOut | None
    functions: list[str] = Field(description="the codec's functions")
    units: dict[str, str]
    variables: dict[str, Any]
    version: int | None
    failing: bool = Field(description="the codec failed on every uplink for an hour or more")
    failing_since: float | None = Field(description="failing on every uplink since then")
    last_error: str | None
    last_error_at: float | None
    created: float | None
    updated: float | None


class DecodeIn(BaseModel):
    payload_hex: str = Field(pattern=r"^(?:[0-9A-Fa-f]{2})*$", max_length=2048)
    port: int = Field(default=1, ge=0, le=255, description="LoRaWAN FPort")
    time: float | None = Field(default=None, description="the uplink's time (default: now)")


class PointOut(BaseModel):
    metric: str
    value: float
    unit: str | None
    time: float


class DecodeOut(BaseModel):
    data: dict[str, Any]
    normalized: dict[str, Any] | list[Any] | None
    points: list[PointOut]
    warnings: list[str]


class EncodeIn(BaseModel):
    data: dict[str, Any]


class EncodeOut(BaseModel):
    payload_hex: str
    port: int
    warnings: list[str]
    decoded: dict[str, Any] | None = Field(
        description="decodeDownlink's data for the bytes, when the codec has it"
    )


def _builtin(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "network": ids.MODEL_NETWORKS[model_id],
        "builtin": True,
        "codec": None,
        "functions": [],
        "units": {},
        "variables": {},
        "version": None,
        "failing": False,
        "failing_since": None,
        "last_error": None,
        "last_error_at": None,
        "created": None,
        "updated": None,
    }


def _body(model: DeviceModel, failing_after: float) -> dict[str, Any]:
    failing = model.failing_since is not None and time.time() - model.failing_since >= failing_after
    return {
        "id": model.id,
        "network": model.network,
        "builtin": False,
        "codec": {"language": model.language, "source": model.source},
        "functions": list(model.functions),
        "units": model.units,
        "variables": model.variables,
        "version": model.version,
        "failing": failing,
        "failing_since": model.failing_since,
        "last_error": model.last_error,
        "last_error_at": model.last_error_at,
        "created": model.created,
        "updated": model.updated,
    }


def _not_found(model_id: str) -> ApiError:
    return ApiError(404, "model_not_found", f"No model {model_id!r}.")


def _refuse_builtin(model_id: str) -> None:
    if model_id in ids.MODEL_NETWORKS:
        raise ApiError(409, "builtin_model", f"{model_id!r} is a built-in model (read-only).")


async def _own_model(conn: ConnDep, principal: Principal, model_id: str) -> DeviceModel:
    if not re.fullmatch(MODEL_ID, model_id):
        raise _not_found(model_id)
    model = await model_store.get_model(conn, principal.account_id, model_id)
    if model is None:
        raise _not_found(model_id)
    return model


def _check_units(units: dict[str, str]) -> None:
    if len(units) > 1000 or any(len(k) > 200 or len(v) > 32 for k, v in units.items()):
        raise ApiError(
            422,
            "invalid_units",
            "units: at most 1000 entries, metrics of 200 and units of 32 characters.",
            details=[],
        )


@router.get("", response_model=list[ModelOut])
async def list_models(principal: ReadDev, conn: ConnDep, ctx: ContextDep) -> Any:
    """The built-in models and the account's own."""
    own = await model_store.list_models(conn, principal.account_id)
    after = ctx.settings.codec_failing_after
    return [_builtin(m) for m in ids.MODEL_NETWORKS] + [_body(m, after) for m in own]


@router.post("", status_code=201, response_model=ModelOut, responses=error_responses(409))
async def create_model(body: ModelIn, principal: WriteDev, conn: ConnDep, ctx: ContextDep) -> Any:
    """Register a model of the account with its codec (422 when the codec does not compile)."""
    _refuse_builtin(body.id)
    _check_units(body.units)
    codec = await compile_or_422(ctx, body.codec.source, body.variables)
    codec.close()
    try:
        model = await model_store.create_model(
            conn,
            account_id=principal.account_id,
            model_id=body.id,
            network=body.network,
            source=body.codec.source,
            units=body.units,
            variables=body.variables,
            functions=sorted(codec.functions),
        )
    except ModelExists as exc:
        raise ApiError(409, "model_exists", f"Model {body.id!r} already exists.") from exc
    return _body(model, ctx.settings.codec_failing_after)


@router.get("/{model_id}", response_model=ModelOut)
async def get_model(model_id: str, principal: ReadDev, conn: ConnDep, ctx: ContextDep) -> Any:
    """One model: a built-in one, or the account's own with its codec and health."""
    if model_id in ids.MODEL_NETWORKS:
        return _builtin(model_id)
    return _body(await _own_model(conn, principal, model_id), ctx.settings.codec_failing_after)


@router.put("/{model_id}", response_model=ModelOut, responses=error_responses(409))
async def replace_model(
    model_id: str, body: ModelBody, principal: WriteDev, conn: ConnDep, ctx: ContextDep
) -> Any:
    """Replace the model's codec, units and variables: a new version, used by the uplinks
    decoded after this answer."""
    _refuse_builtin(model_id)
    current = await _own_model(conn, principal, model_id)
    _check_units(body.units)
    if body.network != current.network and await model_store.devices_using(
        conn, principal.account_id, model_id
    ):
        raise ApiError(
            409, "model_in_use", f"Devices of {model_id!r} are {current.network} devices."
        )
    codec = await compile_or_422(ctx, body.codec.source, body.variables)
    codec.close()
    model = await model_store.replace_model(
        conn,
        account_id=principal.account_id,
        model_id=model_id,
        network=body.network,
        source=body.codec.source,
        units=body.units,
        variables=body.variables,
        functions=sorted(codec.functions),
    )
    if model is None:  # deleted meanwhile
        raise _not_found(model_id)
    return _body(model, ctx.settings.codec_failing_after)


@router.delete(
    "/{model_id}", status_code=204, response_class=Response, responses=error_responses(409)
)
async def delete_model(model_id: str, principal: WriteDev, conn: ConnDep) -> Response:
    """Delete a model of the account (409 while a device uses it)."""
    _refuse_builtin(model_id)
    if not re.fullmatch(MODEL_ID, model_id):
        raise _not_found(model_id)
    try:
        deleted = await model_store.delete_model(conn, principal.account_id, model_id)
    except ModelInUse as exc:
        raise ApiError(409, "model_in_use", f"Cannot delete {model_id!r}: {exc}.") from exc
    if not deleted:
        raise _not_found(model_id)
    return Response(status_code=204)


@router.post("/{model_id}/decode", response_model=DecodeOut, responses=error_responses(409))
async def decode_payload(
    model_id: str, body: DecodeIn, principal: ReadDev, conn: ConnDep, ctx: ContextDep
) -> Any:
    """Decode a payload with the model's codec, as an uplink would be: the "test" button."""
    _refuse_builtin(model_id)
    model = await _own_model(conn, principal, model_id)
    codec = await model_codec(ctx, model)
    received = time.time() if body.time is None else body.time
    outcome = await asyncio.to_thread(
        codec.decode_uplink, UplinkInput(bytes.fromhex(body.payload_hex), body.port, received)
    )
    if isinstance(outcome, CodecFailure):
        raise codec_error(outcome)
    points = flatten_points("", received, outcome.data, outcome.normalized, model.units)
    return {
        "data": outcome.data,
        "normalized": outcome.normalized,
        "points": [
            {"metric": p.metric, "value": p.value, "unit": p.unit, "time": p.time} for p in points
        ],
        "warnings": list(outcome.warnings),
    }


@router.post("/{model_id}/encode", response_model=EncodeOut, responses=error_responses(409))
async def encode_downlink(
    model_id: str, body: EncodeIn, principal: ReadDev, conn: ConnDep, ctx: ContextDep
) -> Any:
    """Encode a downlink with the model's ``encodeDownlink`` (and decode it back with its
    ``decodeDownlink``, when it has one)."""
    _refuse_builtin(model_id)
    model = await _own_model(conn, principal, model_id)
    codec = await model_codec(ctx, model)
    if not codec.encodes:
        raise ApiError(
            422, "no_encoder", f"The codec of {model_id!r} has no encodeDownlink.", details=[]
        )
    outcome = await asyncio.to_thread(codec.encode_downlink, body.data)
    if isinstance(outcome, CodecFailure):
        raise codec_error(outcome)
    decoded = None
    if "decodeDownlink" in codec.functions:
        back = await asyncio.to_thread(codec.decode_downlink, outcome.payload, outcome.port)
        decoded = None if isinstance(back, CodecFailure) else back
    return {
        "payload_hex": outcome.payload.hex().upper(),
        "port": outcome.port,
        "warnings": list(outcome.warnings),
        "decoded": decoded,
    }
