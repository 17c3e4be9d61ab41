"""The HTTP middleware stack, in one place because its order matters."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from quarry.apidocs import docs_page_paths
from quarry.logs import REQUEST_ID_HEADER, RequestContextMiddleware
from quarry.metrics import HttpMetricsMiddleware
from quarry.security.headers import SecurityHeadersMiddleware
from quarry.settings import Settings

API_PREFIX = "/api/"


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """Outermost first: security headers → HTTP metrics → request id and logs → CORS.

    Every response passes the first three, including a CORS preflight and the 500 that the
    request-context middleware answers for an unhandled error. CORS is off unless origins
    are configured; the API uses bearer tokens, never cookies, so credentials stay off.
    """
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER, "Last-Event-ID"],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After", "Content-Disposition"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(
        SecurityHeadersMiddleware, docs_paths=docs_page_paths(app), api_prefix=API_PREFIX
    )
