"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

router = APIRouter(prefix="/health", tags=["health"])

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
    checks: dict[str, str] = {}
    try:
        async with request.app.state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if request.app.state.settings.redis_url:
        try:
            # Bounded: Redis being down must answer 503 quickly, not hang the probe.
            await asyncio.wait_for(request.app.state.queue.ping(), REDIS_TIMEOUT_SECONDS)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if healthy else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
