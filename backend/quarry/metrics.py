"""Prometheus metrics: HTTP traffic, runs and tasks, and LLM calls.

- HTTP: `quarry_http_requests_total{method, route, status}` and
  `quarry_http_request_duration_seconds{method, route}`, labelled by the route *template*
  (`/api/v1/projects/{project_id}`), never the raw path, so ids cannot explode the series.
- Work: `quarry_runs{status}` and `quarry_run_tasks{status}` (the tasks of queued and running
  runs), read from the database at scrape time — the database is the source of truth in both
  modes, and both queries use indexes (runs are few; tasks are counted per active run).
- LLM: `quarry_llm_calls_total{model, outcome}`, `quarry_llm_call_duration_seconds{model,
  outcome}`, `quarry_llm_tokens_total{model, direction}`, `quarry_llm_errors_total{model,
  outcome}` and `quarry_llm_retries_total{reason}`, recorded by the LLM client through
  `record_llm_call` and `record_llm_retry` in whichever process makes the calls.

The API serves everything at GET /metrics (with a bearer token when QUARRY_METRICS_TOKEN is
set). In distributed mode the LLM calls happen in `quarry worker` processes, which serve their
own metrics on QUARRY_WORKER_METRICS_PORT via `serve_worker_metrics`.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quarry.errors import Unauthorized
from quarry.models import ExtractionStatus, RunStatus
from quarry.monitoring import repository
from quarry.settings import Settings

log = structlog.get_logger(__name__)

#: The outcome `record_llm_call` gets for a call that returned an answer; anything else is
#: counted as an error too.
LLM_OK = "ok"
#: Distinct values a free-form label (a model name: projects choose their own) may take
#: before further ones are counted as "other": a bounded number of series, whatever users do.
MAX_LABEL_VALUES = 50
_MAX_LABEL_LENGTH = 100
UNMATCHED_ROUTE = "<unmatched>"
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "quarry_http_requests", "HTTP requests answered.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "quarry_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response.",
    ["method", "route"],
)
LLM_CALLS = Counter("quarry_llm_calls", "LLM calls made, by outcome.", ["model", "outcome"])
LLM_DURATION = Histogram(
    "quarry_llm_call_duration_seconds",
    "Duration of one LLM call (its HTTP retries included).",
    ["model", "outcome"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)
LLM_TOKENS = Counter(
    "quarry_llm_tokens", "Tokens sent (in) and received (out).", ["model", "direction"]
)
LLM_ERRORS = Counter(
    "quarry_llm_errors", "LLM calls that failed, by outcome.", ["model", "outcome"]
)
LLM_RETRIES = Counter("quarry_llm_retries", "LLM calls retried, by reason.", ["reason"])


class _BoundedLabel:
    """Passes the first MAX_LABEL_VALUES distinct values through, then answers "other"."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = (value or "unknown")[:_MAX_LABEL_LENGTH]
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < MAX_LABEL_VALUES:
                self._seen.add(value)
                return value
        return "other"


_model_label = _BoundedLabel()
_outcome_label = _BoundedLabel()
_reason_label = _BoundedLabel()


def record_llm_call(
    model: str, outcome: str, seconds: float, tokens_in: int, tokens_out: int
) -> None:
    """Count one LLM call. `outcome` is `LLM_OK` ("ok") for an answer, else the failure's kind
    (e.g. "timeout", "rate_limited", "server_error", "invalid_json"). Thread-safe, cheap."""
    model = _model_label(model)
    outcome = _outcome_label(outcome)
    LLM_CALLS.labels(model, outcome).inc()
    LLM_DURATION.labels(model, outcome).observe(max(seconds, 0.0))
    if tokens_in > 0:
        LLM_TOKENS.labels(model, "in").inc(tokens_in)
    if tokens_out > 0:
        LLM_TOKENS.labels(model, "out").inc(tokens_out)
    if outcome != LLM_OK:
        LLM_ERRORS.labels(model, outcome).inc()


def record_llm_retry(reason: str) -> None:
    """Count one retry of an LLM call (`reason` e.g. "429", "5xx", "timeout", "repair")."""
    LLM_RETRIES.labels(_reason_label(reason)).inc()


def serve_worker_metrics(settings: Settings, addr: str = "0.0.0.0") -> int | None:
    """Serve this process's metrics over HTTP when QUARRY_WORKER_METRICS_PORT is set.

    For `quarry worker` start-up: the LLM calls (and so the LLM metrics) of distributed mode
    happen in the workers. Starts a daemon thread; returns the port, or None when the setting
    is 0. Any path answers; Prometheus scrapes `/metrics`.
    """
    if not settings.worker_metrics_port:
        return None
    server, _thread = start_http_server(settings.worker_metrics_port, addr=addr)
    port = int(server.server_address[1])
    log.info("worker.metrics_serving", port=port)
    return port


class HttpMetricsMiddleware:
    """Counts every HTTP response and its latency by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # id(route) → its full template. Routing leaves the matched route in scope["route"],
        # but FastAPI includes routers lazily, so that route's own `path` lacks the prefixes
        # it was included under ("/projects/{project_id}" for "/api/v1/projects/…").
        self._templates: dict[int, str] = {}

    def _route_template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED_ROUTE
        template = self._templates.get(id(route))
        if template is None:
            app = scope.get("app")
            if app is not None:  # a route seen for the first time: read the table again
                self._templates = {
                    id(context.original_route): str(context.path)
                    for context in iter_route_contexts(app.routes)
                    if context.path
                }
            template = self._templates.get(id(route)) or str(getattr(route, "path", ""))
            self._templates[id(route)] = template or UNMATCHED_ROUTE
        return template or UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            method = scope["method"] if scope["method"] in _HTTP_METHODS else "other"
            route = self._route_template(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


class _Snapshot(Collector):
    """Metric families computed beforehand (the database is read asynchronously)."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Any:
        return iter(self.families)


async def _work_families(request: Request) -> list[GaugeMetricFamily]:
    runs = GaugeMetricFamily("quarry_runs", "Runs, by status.", labels=["status"])
    tasks = GaugeMetricFamily(
        "quarry_run_tasks",
        "Tasks ((document, variable) extractions) of queued and running runs, by status.",
        labels=["status"],
    )
    database_up = GaugeMetricFamily(
        "quarry_metrics_database_up", "1 when the database answered this scrape's queries."
    )
    run_counts = {status.value: 0 for status in RunStatus}
    task_counts = {status.value: 0 for status in ExtractionStatus}
    try:
        async with request.app.state.sessionmaker() as session:
            run_counts.update(await repository.count_runs_by_status(session))
            task_counts.update(await repository.count_active_tasks_by_status(session))
    except Exception as exc:
        log.warning("metrics.database_unavailable", error_type=type(exc).__name__)
        database_up.add_metric([], 0)
        return [database_up]
    for status, count in run_counts.items():
        runs.add_metric([status], count)
    for status, count in task_counts.items():
        tasks.add_metric([status], count)
    database_up.add_metric([], 1)
    return [runs, tasks, database_up]


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format: this process's metrics plus the database's run counts."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        expected = f"Bearer {token.get_secret_value()}".encode()
        given = request.headers.get("Authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            raise Unauthorized("GET /metrics needs `Authorization: Bearer <QUARRY_METRICS_TOKEN>`.")
    work = CollectorRegistry(auto_describe=False)
    work.register(_Snapshot(await _work_families(request)))
    body = generate_latest(REGISTRY) + generate_latest(work)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """Serve GET /metrics (outside the OpenAPI contract: it is for Prometheus, not clients)."""
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
