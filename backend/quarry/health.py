"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from quarry.monitoring import repository

router = APIRouter(prefix="/health", tags=["health"])

#: Each check answers within this, or the probe says 503 with the reason: an orchestrator's
#: probe has a timeout of its own (Kubernetes: 1 s by default), and a probe that hangs tells
#: it nothing about why.
DATABASE_TIMEOUT_SECONDS = 2.0
REDIS_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


@router.get("/live", response_model=Health)
async def live() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(request: Request) -> JSONResponse:
    """The database (and Redis, when configured) answer; 503 with the failing check if not."""
    checks = {"database": await _check_database(request.app)}
    if request.app.state.settings.redis_url:
        checks["redis"] = await _check_redis(request.app)
    healthy = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if healthy else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


async def _check_database(app: FastAPI) -> str:
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
            async with _probe_engine(app).connect() as connection:
                await repository.ping(connection)
    except TimeoutError:
        return f"unavailable: no answer within {DATABASE_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


async def _check_redis(app: FastAPI) -> str:
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            await app.state.queue.ping()
    except TimeoutError:
        return f"unavailable: no answer within {REDIS_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


def _probe_engine(app: FastAPI) -> AsyncEngine:
    """The readiness probe's own way to the database: a new connection per probe, outside
    the request pool.

    Through the request pool, a burst of slow requests holding every pooled connection (30 on
    PostgreSQL) would make the probe wait for one — up to the pool's 30 s timeout — and a
    busy but healthy server would be taken out of service, and with it, under a load spike,
    every replica at once. What the probe reports is "the database answers", so it asks the
    database directly: a fresh connection also proves the server still accepts new ones.
    It costs a connection set-up per probe (milliseconds, every few seconds) and holds no
    connection between probes, so there is nothing to close at shutdown.
    """
    engine: AsyncEngine | None = getattr(app.state, "probe_engine", None)
    if engine is None:
        engine = create_async_engine(app.state.settings.database_url, poolclass=NullPool)
        app.state.probe_engine = engine
    return engine
