"""The error body of api-contract.md: ``{"error": {"code", "message"[, "details"]}}``."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.responses import OrjsonResponse

log = logging.getLogger(__name__)

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise to answer with the contract's error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers
        self.extra = extra or {}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> OrjsonResponse:
    body: dict[str, Any] = {"code": code, "message": message, **(extra or {})}
    if details is not None:
        body["details"] = details
    return OrjsonResponse({"error": body}, status_code=status, headers=headers)


def internal_error_response() -> OrjsonResponse:
    """The 500 of an unexpected error, logged with its traceback: call it while handling it."""
    log.exception("unhandled error")
    return error_response(500, "internal_error", "An internal error occurred.")


def api_error_response(exc: ApiError) -> OrjsonResponse:
    """The contract's body for an :class:`ApiError`."""
    return error_response(
        exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers, extra=exc.extra
    )


def _clean_details(errors: Any) -> list[dict[str, Any]]:
    details = []
    for err in errors:
        loc = [part for part in err.get("loc", ()) if part != "body"]
        details.append(
            {
                "field": ".".join(str(p) for p in loc),
                "message": err.get("msg", ""),
                "type": err.get("type"),
            }
        )
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the contract's body; never leak a trace."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> OrjsonResponse:
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        errors = list(exc.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response(400, "invalid_json", "The request body is not valid JSON.")
        details = _clean_details(errors)
        fields = ", ".join(d["field"] or "body" for d in details[:5])
        return error_response(422, "invalid", f"Invalid content: {fields}.", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = _DEFAULT_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(psycopg.OperationalError)  # PoolTimeout included
    async def _database_away(_: Request, exc: psycopg.OperationalError) -> OrjsonResponse:
        log.warning("request refused, database unavailable: %r", exc)
        return error_response(
            503,
            "database_unavailable",
            "The database is unavailable; retry shortly.",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> OrjsonResponse:
        return internal_error_response()
