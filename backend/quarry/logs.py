"""Structured JSON logs carrying request and run ids (structlog over the stdlib)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
import uuid
from pathlib import Path

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quarry.errors import internal_error_response

REQUEST_ID_HEADER = "X-Request-ID"

_http_log = structlog.get_logger("quarry.http")


#: A log file (`configure_logging(file=…)`) is rolled over at this size, one old file kept.
LOG_FILE_BYTES = 5 * 1024 * 1024


def configure_logging(
    level: str = "INFO", *, json: bool = True, file: Path | None = None, file_level: str = "INFO"
) -> None:
    """Route stdlib and structlog records through one JSON (or console) renderer, on stderr
    at `level`; with `file`, also as JSON lines to that file at `file_level` (so a command
    that keeps its terminal quiet still leaves the whole story of a run behind)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    def formatter(render: structlog.types.Processor) -> logging.Formatter:
        return structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                render,
            ],
        )

    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(renderer))
    handler.setLevel(level.upper())
    handlers = [handler]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.handlers.RotatingFileHandler(
            file, maxBytes=LOG_FILE_BYTES, backupCount=1, encoding="utf-8"
        )
        to_file.setFormatter(formatter(structlog.processors.JSONRenderer()))
        to_file.setLevel(file_level.upper())
        handlers.append(to_file)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(min(h.level for h in handlers))
    # The HTTP clients log every request line at INFO, including URLs, and Arq every job's
    # start and end (two lines per extraction): keep them quiet.
    for noisy in (
        "arq",
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "openai",
        "uvicorn.access",
        "aiosqlite",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _request_id(scope: Scope) -> str:
    """A sane incoming X-Request-ID (so a proxy's id follows the request), else a new one."""
    incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
    if 0 < len(incoming) <= 64 and incoming.isprintable():
        return incoming
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Give every request an id, put it on every response, and log the request's outcome.

    A plain ASGI middleware (not `BaseHTTPMiddleware`) so that the id also reaches responses
    that are not built by a route — 404s, 405s, CORS preflights — and so that an unhandled
    error still gets a JSON 500 carrying the id (Starlette's own last-resort handler sits
    outside every middleware, so its 500 would have neither the id nor the security headers).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id  # request.state.request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            _http_log.exception("request.unhandled_error", error_type=type(exc).__name__)
            if response_started:  # too late to answer: let the server close the connection
                raise
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            _http_log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
