"""The QuarryError family and the one place that renders errors as `{"error", "detail"}`."""

from __future__ import annotations

from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class QuarryError(Exception):
    """A failure with a human sentence and an honest HTTP status."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(QuarryError):
    status_code = 400
    code = "bad_request"


class Unauthorized(QuarryError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str = "Not signed in, or the session has expired.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(QuarryError):
    status_code = 404
    code = "not_found"


class Conflict(QuarryError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(QuarryError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(QuarryError):
    status_code = 415
    code = "unsupported_media_type"


class ServiceUnavailable(QuarryError):
    status_code = 503
    code = "service_unavailable"


def _payload(code: str, detail: str) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def _describe_validation_error(exc: RequestValidationError) -> str:
    """Turn pydantic's error list into sentences a person can act on."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg", "is invalid"))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "The request is invalid."


def install_error_handlers(app: FastAPI) -> None:
    """Register the single rendering of every error the API can answer."""

    @app.exception_handler(QuarryError)
    async def _quarry_error(_: Request, exc: QuarryError) -> JSONResponse:
        return JSONResponse(
            _payload(exc.code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            _payload("validation_error", _describe_validation_error(exc)), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such resource."
        return JSONResponse(
            _payload(codes.get(exc.status_code, "http_error"), detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request.unhandled_error", error_type=type(exc).__name__)
        return JSONResponse(
            _payload("internal_error", "Something went wrong on our side; it has been logged."),
            status_code=500,
        )
