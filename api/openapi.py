"""The error contract in the OpenAPI document: the ``ErrorBody`` schema, ``responses=`` for a
route's own statuses (:func:`error_responses`), and the errors every operation may answer
declared on all of them at once (:func:`document_errors`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from api.ratelimit import RateLimitHeaders


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case error code")
    message: str = Field(description="a human sentence")
    details: list[dict[str, Any]] | None = Field(default=None, description="422: the fields")
    retry_after: int | None = Field(default=None, description="429: seconds to wait")


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message"[, "details"]}}``."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, invalid, expired or revoked API key",
    403: "The key lacks the scope",
    404: "Not found (or not visible to this key)",
    409: "Conflict",
    413: "Body too large",
    422: "Valid JSON, invalid content",
    429: "Rate limit exceeded",
    500: "Internal error",
    503: "A dependency is down",
}
_RATE_HEADERS = {
    "X-RateLimit-Limit": {"schema": {"type": "integer"}, "description": "requests per window"},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "left in window"},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "Unix time of reset"},
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses with the error body."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


_REF = "#/components/schemas/{model}"


def _error_ref(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if code == 429:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"},
            **_RATE_HEADERS,
        }
    return response


def document_errors(app: FastAPI) -> None:
    """Declare the contract's common errors on every operation of the OpenAPI document.

    Any operation may answer 500; one with a body 400, 413 and 422; one with parameters 422;
    one with a path parameter 404; an authenticated one 401, 403 and 429 (and every answer of
    an authenticated one carries the ``X-RateLimit-*`` headers). Routes declare the rest
    (409, 503, ...) themselves.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["ErrorBody"] = ErrorBody.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas.update(schemas["ErrorBody"].pop("$defs", {}))
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                _add_errors(operation)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_errors(operation: dict[str, Any]) -> None:
    params = operation.get("parameters", [])
    secured = bool(operation.get("security"))
    codes = {500}
    if "requestBody" in operation:
        codes |= {400, 413, 422}
    if params:
        codes.add(422)
    if any(p.get("in") == "path" for p in params):
        codes.add(404)
    if secured:
        codes |= {401, 403, 429}
    responses = operation.setdefault("responses", {})
    for code in sorted(codes):
        responses.setdefault(str(code), _error_ref(code))
    if secured:
        for response in responses.values():
            response.setdefault("headers", {})
            for name, header in _RATE_HEADERS.items():
                response["headers"].setdefault(name, header)


def install_openapi_errors(app: FastAPI) -> None:
    """The API's own wiring of the app: rate-limit headers and the documented errors."""
    app.add_middleware(RateLimitHeaders)
    document_errors(app)
