"""The QuarryError family and the one place that renders errors as `{"error", "detail"}`."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
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

    def extra(self) -> dict[str, Any]:
        """Fields an error of this kind adds to the `{"error", "detail"}` body (e.g. a list)."""
        return {}


class BadRequest(QuarryError):
    status_code = 400
    code = "bad_request"


class Unauthorized(QuarryError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str = "Not signed in, or the session has expired.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(QuarryError):
    """A member of a project whose role does not allow the action (non-members get 404)."""

    status_code = 403
    code = "forbidden"


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


class TooManyRequests(QuarryError):
    """A rate limit was hit; `Retry-After` says in how many seconds to try again."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"{detail} Try again in {seconds} s.", headers={"Retry-After": str(seconds)}
        )
        self.retry_after = seconds


class ServiceUnavailable(QuarryError):
    status_code = 503
    code = "service_unavailable"


class ErrorOut(BaseModel):
    """The body of every error the API answers."""

    error: str = Field(description="A stable, machine-readable code, e.g. not_found")
    detail: str = Field(description="A sentence for a person")


def _payload(code: str, detail: str) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def internal_error_response() -> JSONResponse:
    """The 500 answer: says nothing about the cause, which is in the log under the request id."""
    return JSONResponse(
        _payload("internal_error", "Something went wrong on our side; it has been logged."),
        status_code=500,
    )


_ERROR_DESCRIPTIONS = {
    400: "The request is well-formed but cannot be carried out as asked (the detail says why)",
    401: "Not signed in, or the token is invalid or expired",
    403: "Not allowed: a member of the project whose role does not allow this, or a user who "
    "is not an administrator (the detail says what is needed)",
    404: "No such object (also when it belongs to another user)",
    422: "The request does not match this operation's parameters or body",
    429: "Too many requests; `Retry-After` says how many seconds to wait",
}
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}


_ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorOut"}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


# Errors particular to one operation whose router does not declare them (yet): a router's own
# `responses=` is the better home, and wins over this table. tests/security/test_fuzz_api.py
# fails on any status an operation answers that the contract does not document.
_OPERATION_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/api/v1/projects/{project_id}/variables"): {
        409: "The project already has a variable with this name",
    },
    ("patch", "/api/v1/projects/{project_id}/variables/{variable_id}"): {
        409: "The project already has a variable with this name",
    },
    ("post", "/api/v1/projects/{project_id}/runs/{run_id}/cancel"): {
        409: "The run is not queued or running",
    },
    ("post", "/api/v1/projects/{project_id}/runs/{run_id}/retry"): {
        400: "No LLM is configured",
        409: "The run has no failed or cancelled extractions to retry",
    },
}


def _error_response(status: int, description: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description or _ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": _ERROR_SCHEMA_REF}},
    }
    if status == 429:
        response["headers"] = RETRY_AFTER_HEADER
    return response


def _add_error_responses(
    schema: dict[str, Any], needs_role: frozenset[tuple[str, str]] = frozenset()
) -> None:
    """Add the errors an operation can answer, judged from the operation itself (idempotent).

    Authenticated operations (those with `security`) can answer 401 and 429, and 400 too when
    they take a body (a codebook or review rule that JSON Schema cannot state); operations
    with path parameters 404; operations in `needs_role` (a project permission beyond reading)
    403; operations with any parameters or a body 422 — all in the
    `{"error", "detail"}` shape, replacing FastAPI's default 422 schema, which this API never
    sends.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorOut", ErrorOut.model_json_schema())
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, description in _OPERATION_ERRORS.get((method, path), {}).items():
                responses.setdefault(str(status), _error_response(status, description))
            parameters = operation.get("parameters", [])
            statuses = []
            if operation.get("security"):
                statuses += [401, 429]
                if "requestBody" in operation:  # a rule JSON Schema cannot state was broken
                    statuses.append(400)
            if any(p.get("in") == "path" for p in parameters):
                statuses.append(404)
            if (method, path) in needs_role:
                statuses.append(403)

            if parameters or "requestBody" in operation:
                statuses.append(422)
            for status in statuses:
                documented = responses.get(str(status))
                default_422 = (
                    status == 422
                    and documented is not None
                    and "HTTPValidationError" in str(documented)
                )
                if documented is None or default_422:
                    responses[str(status)] = _error_response(status)
            operation["responses"] = dict(sorted(responses.items()))
    if "HTTPValidationError" not in str(schema.get("paths", {})):
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            components.pop(name, None)


def _operations_needing_a_role(app: FastAPI) -> frozenset[tuple[str, str]]:
    """(method, path) of every route whose project permission is more than `read` (those a
    member can be refused), and of every route for administrators only: those that can
    answer 403. Read off the routes' own declarations, so the contract cannot drift from
    the check."""
    from quarry.auth.deps import admin_routes  # they depend on this module
    from quarry.projects.deps import route_permissions
    from quarry.projects.roles import Permission

    return admin_routes(app) | frozenset(
        operation
        for operation, permission in route_permissions(app).items()
        if permission not in (None, Permission.READ)
    )


def document_error_responses(app: FastAPI) -> None:
    """Make the OpenAPI schema list the errors every operation can answer (see above).

    Errors particular to one route (400, 409, 413, 415) are declared by its router's
    `responses=`; these are the ones every route of a kind shares.
    """
    generate = app.openapi

    def openapi_with_errors() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached until the routes change
        _add_error_responses(schema, _operations_needing_a_role(app))
        return schema

    app.openapi = openapi_with_errors  # type: ignore[method-assign]


def _describe_validation_error(exc: RequestValidationError) -> str:
    """Turn pydantic's error list into sentences a person can act on."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "The request is invalid."


def install_error_handlers(app: FastAPI) -> None:
    """Register the single rendering of every error the API can answer."""

    @app.exception_handler(QuarryError)
    async def _quarry_error(_: Request, exc: QuarryError) -> JSONResponse:
        return JSONResponse(
            {**_payload(exc.code, exc.detail), **exc.extra()},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            _payload("validation_error", _describe_validation_error(exc)), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # Only FastAPI's own request parsing raises a bare 400 (a body that is not valid
            # UTF-8 JSON or form data; Quarry's code raises QuarryErrors): that is request
            # validation, answered like every other one.
            return JSONResponse(
                _payload("validation_error", f"The request body could not be read: {exc.detail}"),
                status_code=422,
            )
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
        # A backstop: quarry.logs.RequestContextMiddleware answers unhandled errors itself
        # (so the 500 still carries the request id and the security headers).
        log.exception("request.unhandled_error", error_type=type(exc).__name__)
        return internal_error_response()
