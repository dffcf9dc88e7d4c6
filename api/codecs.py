"""The API process's compiled codecs of the accounts' own models (the models' "test" routes and
the downlinks encoded by a model's codec), and the codec errors' HTTP form."""

from __future__ import annotations

import asyncio
from typing import Any

from api.context import ApiContext
from api.errors import ApiError
from services.codecs import (
    CodecCache,
    CodecFailure,
    CodecInvalid,
    CodecLimits,
    DeviceModel,
    JsCodec,
    compile_codec,
)
from services.platform import Settings


def codec_limits(settings: Settings) -> CodecLimits:
    """The sandbox's limits of these settings."""
    return CodecLimits(
        timeout_ms=settings.codec_timeout_ms,
        memory_bytes=settings.codec_memory_mib * 1024 * 1024,
        max_output_bytes=settings.codec_max_output_bytes,
    )


def _cache(ctx: ApiContext) -> CodecCache:
    """The context's codec cache, whose isolates are freed when the API stops (it was a
    module-wide dict keyed by ``id(ctx)``: never freed, and a later app, as in the tests, could
    be handed an earlier one's cache under a reused id)."""
    cache = ctx.codec_cache
    if cache is None:
        cache = ctx.codec_cache = CodecCache(codec_limits(ctx.settings), size=32)

        async def close() -> None:
            cache.close()

        ctx.closers.append(close)
    return cache


async def compile_or_422(ctx: ApiContext, source: str, variables: dict[str, Any]) -> JsCodec:
    """Compile a codec (in a thread); 422 ``invalid_codec`` with the engine's message and line."""
    try:
        return await asyncio.to_thread(
            compile_codec, source, variables=variables, limits=codec_limits(ctx.settings)
        )
    except CodecInvalid as exc:
        where = f" (line {exc.line})" if exc.line is not None else ""
        raise ApiError(
            422,
            "invalid_codec",
            f"The codec cannot be used: {exc.message}{where}.",
            details=[
                {"field": "codec.source", "message": exc.message, "type": "codec", "line": exc.line}
            ],
        ) from exc


async def model_codec(ctx: ApiContext, model: DeviceModel) -> JsCodec:
    """The model's compiled codec (cached per account, model and version)."""
    cache = _cache(ctx)
    key = (model.account_id, model.id, model.version)
    found = cache.get(key)
    if found is not None and isinstance(found[1], JsCodec):
        return found[1]
    codec = await compile_or_422(ctx, model.source, model.variables)
    cache.put(key, model, codec)
    return codec


def codec_error(failure: CodecFailure) -> ApiError:
    """422 ``codec_error``: the codec's errors, or the exception and its line."""
    where = f" (line {failure.line})" if failure.line is not None else ""
    return ApiError(
        422,
        "codec_error",
        f"The codec failed: {failure.reason}{where}.",
        details=[
            {
                "field": "codec",
                "message": failure.reason,
                "type": failure.kind,
                "line": failure.line,
                "errors": list(failure.errors),
            }
        ],
    )
