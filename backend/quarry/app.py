"""FastAPI app factory and lifespan."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI

from quarry import __version__
from quarry.apidocs import create_documented_app
from quarry.auth.router import router as auth_router
from quarry.auth.service import ensure_admin
from quarry.db import create_engine, create_sessionmaker, session_scope
from quarry.documents.page_images import PageImages
from quarry.documents.router import router as documents_router
from quarry.documents.storage import LocalStorage
from quarry.errors import document_error_responses, install_error_handlers
from quarry.evaluation.router import router as evaluation_router
from quarry.exports.router import router as exports_router
from quarry.extractions.router import router as extractions_router
from quarry.health import router as health_router
from quarry.jobs import JobContext
from quarry.llm.client import ChatModelFactory
from quarry.logs import configure_logging
from quarry.members.router import router as members_router
from quarry.metrics import install_metrics
from quarry.profiles.router import router as profiles_router
from quarry.projects.router import router as projects_router
from quarry.reflists.router import router as reflists_router
from quarry.reviewing.router import router as reviewing_router
from quarry.runs.progress import ProgressHub
from quarry.runs.router import router as runs_router
from quarry.security.middleware import install_middleware
from quarry.security.ratelimit import create_rate_limiter
from quarry.security.router import router as audit_router
from quarry.settings import Settings, get_settings
from quarry.users.router import router as users_router
from quarry.variables.router import codebook_router
from quarry.variables.router import router as variables_router
from quarry.web import mount_web
from quarry.webhooks.router import router as webhooks_router
from quarry.worker import create_queue

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; tests pass their own settings."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        storage = LocalStorage(settings.storage_dir)
        llm = ChatModelFactory(settings)
        # Embedded: jobs run in this process. Distributed (QUARRY_REDIS_URL): this process
        # only enqueues, and `quarry worker` processes run the jobs and the sweeper.
        queue = create_queue(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        app.state.storage = storage
        app.state.page_images = PageImages.from_settings(settings, storage)
        app.state.llm = llm
        app.state.queue = queue
        app.state.progress = ProgressHub(sessionmaker, settings)
        app.state.rate_limiter = create_rate_limiter(settings)
        settings.signing_key()  # fail at start-up, not at the first sign-in
        async with session_scope(sessionmaker) as session:
            await ensure_admin(session, settings)
        ctx = JobContext(
            settings=settings,
            sessionmaker=sessionmaker,
            storage=storage,
            llm=llm,
            queue=queue,
            worker_id=f"embedded-{uuid.uuid4().hex[:12]}",
        )
        await queue.start(ctx)
        log.info(
            "app.started",
            version=__version__,
            database=engine.url.get_backend_name(),
            jobs="arq" if settings.redis_url else "embedded",
            llm_configured=llm.configured,
            model=settings.llm_model,
        )
        try:
            yield
        finally:
            await app.state.progress.close()
            await app.state.page_images.aclose()
            await queue.stop()
            await app.state.rate_limiter.close()
            await llm.aclose()
            await engine.dispose()

    app = create_documented_app(
        title="Quarry",
        version=__version__,
        summary="LLM-powered structured extraction from documents into checked spreadsheets.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_middleware(app, settings)
    api = APIRouter(prefix="/api/v1")
    for router in (
        auth_router,
        users_router,
        projects_router,
        members_router,
        variables_router,
        codebook_router,
        profiles_router,
        documents_router,
        runs_router,
        extractions_router,
        exports_router,
        evaluation_router,
        webhooks_router,
        reflists_router,
        reviewing_router,
        audit_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health_router)
    install_metrics(app)
    mount_web(app)
    document_error_responses(app)
    return app
