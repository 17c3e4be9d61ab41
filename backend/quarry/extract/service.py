"""`quarry extract`: a whole extraction in this process, through the API's own services.

The work directory holds a SQLite database and a storage directory. One user (the person at
the terminal) owns one project per codebook name; each invocation

1. makes the project match the codebook (variables matched by name, so an unchanged
   variable keeps its prompt version and with it its cached answers),
2. uploads the documents (bytes the project holds already are not stored again) and removes
   the project's documents that were not named this time, so the export holds exactly these,
3. cancels a run a previous invocation left unfinished (it was interrupted or killed),
4. creates a run over every ready document × every variable — the result cache answers the
   pairs an earlier invocation stored, without a call — and runs it on the embedded runner,
5. exports the project with the export service.

So resuming after Ctrl-C or a crash is re-running the command: what was stored is reused and
only what is missing is asked. A lock file keeps a second invocation out of a work directory
in use (the one process holding it is the only one that can hold leases there).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.auth import repository as users
from quarry.auth.service import create_user
from quarry.db import create_engine, create_sessionmaker, session_scope
from quarry.documents import service as documents
from quarry.documents.storage import LocalStorage, StagedFile
from quarry.errors import QuarryError
from quarry.exports import service as exports
from quarry.exports.schemas import ExportFormat, ExportLayout
from quarry.extract.codebook import Codebook
from quarry.extractions import service as extractions
from quarry.jobs import JobContext, JobQueue
from quarry.llm.client import ChatModelFactory
from quarry.models import (
    ACTIVE_RUN_STATUSES,
    Document,
    DocumentStatus,
    ExtractionStatus,
    Project,
    RunStatus,
    User,
)
from quarry.projects import service as projects
from quarry.projects.schemas import ProjectCreate, ProjectUpdate
from quarry.runner import EmbeddedQueue, stop_work
from quarry.runs import service as runs
from quarry.runs.schemas import RunCreate, RunEstimate, RunOut
from quarry.settings import Settings
from quarry.variables import service as variables
from quarry.variables.schemas import VariableCreate, VariableUpdate

#: The one user of a work directory (nobody signs in as it: its password is thrown away).
LOCAL_USER = "you@quarry.local"
#: How often progress is read from the database.
POLL_SECONDS = 0.25
_PAGE = 500
_FINAL = {RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_ERRORS, RunStatus.FAILED}


class WorkDirectoryBusy(RuntimeError):
    """Another `quarry extract` is using the work directory."""


class Reporter(Protocol):
    """What the command shows while it works (the CLI's rich display; tests pass their own)."""

    def stage(self, message: str) -> None: ...

    def progress(self, run: RunOut) -> None: ...


@dataclass(frozen=True)
class ExtractRequest:
    codebook: Codebook
    documents: Sequence[Path]
    output: Path
    format: ExportFormat
    layout: ExportLayout = ExportLayout.WIDE
    budget_usd: float | None = None
    model: str | None = None
    group_size: int | None = None
    dry_run: bool = False


@dataclass
class ExtractResult:
    """What became of an invocation."""

    estimate: RunEstimate | None = None
    run: RunOut | None = None
    #: Why pairs failed: (reason, how many), most frequent first.
    failures: list[tuple[str, int]] = field(default_factory=list)
    #: Documents that could not be read: (filename, reason).
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    written: Path | None = None
    #: Why no run could be made (the service's sentence), if none was.
    refused: str | None = None

    @property
    def pairs_not_done(self) -> int:
        if self.run is None:
            return 0
        return self.run.counts.failed + self.run.counts.cancelled


def extract_settings(
    work_dir: Path,
    *,
    model: str | None = None,
    base_url: str | None = None,
    concurrency: int | None = None,
) -> Settings:
    """The environment's settings (QUARRY_*, OPENAI_*, .env) with the work directory's
    database and storage, the embedded runner, and the command line's overrides."""
    overrides: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{work_dir.resolve() / 'quarry.db'}",
        "storage_dir": work_dir.resolve() / "storage",
        "redis_url": None,
        # One process holds every lease here: a killed predecessor's parses come back soon.
        "task_lease_seconds": 15,
        "sweep_interval_seconds": 2.0,
    }
    if model:
        overrides["llm_model"] = model
    if base_url:
        overrides["openai_base_url"] = base_url
    if concurrency:
        overrides["llm_concurrency"] = concurrency
    return Settings(**overrides)  # type: ignore[arg-type]


@contextlib.contextmanager
def work_directory_lock(work_dir: Path) -> Iterator[None]:
    """Hold the work directory for this process (released when it exits, even if killed)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise WorkDirectoryBusy(
                f"Another `quarry extract` is using {work_dir}; wait for it, or give this one "
                "another --work-dir."
            ) from exc
        yield


# ---------------------------------------------------------------------------------------------
# The project


async def _local_user(session: AsyncSession, settings: Settings) -> User:
    user = await users.get_user_by_email(session, LOCAL_USER)
    if user is None:
        user = await create_user(session, settings, LOCAL_USER, secrets.token_urlsafe(24))
    return user


async def _find_project(session: AsyncSession, user: User, name: str) -> Project | None:
    offset = 0
    while True:
        page, total = await projects.list_projects(session, user, _PAGE, offset)
        for project, _role in page:
            if project.name == name:
                return project
        offset += _PAGE
        if offset >= total:
            return None


def _project_settings(request: ExtractRequest) -> ProjectUpdate:
    wanted = request.codebook.project
    return ProjectUpdate(
        name=request.codebook.name,
        description=wanted.description or "",
        llm_model=request.model or wanted.llm_model,
        llm_temperature=wanted.llm_temperature,
        group_size=request.group_size or wanted.group_size or 1,
    )


async def _sync_variables(
    session: AsyncSession, project: Project, wanted: Sequence[VariableCreate]
) -> None:
    """The project's variables become the codebook's, matched by name, in its order."""
    existing = {v.name: v for v in await variables.list_variables(session, project)}
    names = {v.name for v in wanted}
    for variable in existing.values():
        if variable.name not in names:
            await variables.delete_variable(session, variable)
    for position, data in enumerate(wanted):
        fields = data.model_copy(update={"position": position, "label": data.label or data.name})
        current = existing.get(data.name)
        if current is None:
            await variables.create_variable(session, project, fields)
        else:
            await variables.update_variable(
                session, current, VariableUpdate.model_validate(fields.model_dump())
            )


async def _cancel_unfinished(session: AsyncSession, queue: JobQueue, project: Project) -> int:
    """Cancel the runs an interrupted or killed invocation left active (before this process
    starts its runner, so none of their tasks is claimed again); their stored answers stay,
    and the result cache gives them to the next run."""
    active = []
    offset = 0
    while True:
        page, total = await runs.list_runs(session, project, _PAGE, offset)
        active += [run for run in page if run.status in ACTIVE_RUN_STATUSES]
        offset += _PAGE
        if offset >= total:
            break
    for run in active:
        await runs.cancel_run(session, queue, run)
    return len(active)


async def prepare_project(ctx: JobContext, request: ExtractRequest) -> Project:
    """The codebook's project, matching the codebook, with no run left active."""
    async with session_scope(ctx.sessionmaker) as session:
        user = await _local_user(session, ctx.settings)
        project = await _find_project(session, user, request.codebook.name)
        if project is None:
            project = await projects.create_project(
                session, user, ProjectCreate(name=request.codebook.name)
            )
        project = await projects.update_project(session, project, _project_settings(request))
        await _sync_variables(session, project, request.codebook.variables)
        await _cancel_unfinished(session, ctx.queue, project)
        return project


# ---------------------------------------------------------------------------------------------
# Documents


def _stage(storage: LocalStorage, path: Path) -> StagedFile:
    staging = storage.open_staging(path.name)
    try:
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                staging.write([chunk])
        return staging.finish()
    except BaseException:
        staging.discard()
        raise


async def _all_documents(session: AsyncSession, project: Project) -> list[Document]:
    found: list[Document] = []
    while True:
        page, total = await documents.list_documents(session, project, _PAGE, len(found))
        found.extend(page)
        if len(found) >= total or not page:
            return found


async def upload_documents(
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: LocalStorage,
    queue: EmbeddedQueue,
    project: Project,
    paths: Sequence[Path],
) -> None:
    """Upload the files (one transaction each, so the upload order is the export's row
    order) and remove the project's other documents."""
    kept: set[uuid.UUID] = set()
    for path in paths:
        staged = await asyncio.to_thread(_stage, storage, path)
        async with session_scope(sessionmaker) as session:
            uploaded = await documents.upload_documents(session, storage, queue, project, [staged])
        kept.update(u.document.id for u in uploaded)
    async with session_scope(sessionmaker) as session:
        for document in await _all_documents(session, project):
            if document.id not in kept:
                await documents.delete_document(session, storage, document)


async def wait_for_documents(
    sessionmaker: async_sessionmaker[AsyncSession], project: Project
) -> list[tuple[str, str]]:
    """Wait until every document is parsed; returns those that could not be read."""
    waiting = (DocumentStatus.UPLOADED, DocumentStatus.PARSING)
    while True:
        async with sessionmaker() as session:
            pending = 0
            for status in waiting:
                _, count = await documents.list_documents(session, project, 1, 0, status)
                pending += count
            if not pending:
                failed, _ = await documents.list_documents(
                    session, project, _PAGE, 0, DocumentStatus.FAILED
                )
                return [(d.filename, d.error or "it could not be read") for d in failed]
        await asyncio.sleep(POLL_SECONDS)


# ---------------------------------------------------------------------------------------------
# The run


async def _run_out(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    project: Project,
    run_id: uuid.UUID,
) -> RunOut:
    async with sessionmaker() as session:
        run = await runs.get_run(session, project, run_id)
        return (await runs.runs_out(session, settings, [run]))[0]


async def follow_run(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    project: Project,
    run_id: uuid.UUID,
    reporter: Reporter,
) -> RunOut:
    """Report the run's progress until it ends."""
    while True:
        out = await _run_out(sessionmaker, settings, project, run_id)
        reporter.progress(out)
        if out.status in _FINAL or out.status is RunStatus.CANCELLED:
            return out
        await asyncio.sleep(POLL_SECONDS)


async def failure_reasons(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    project: Project,
    run: RunOut,
) -> list[tuple[str, int]]:
    """Why the run's pairs failed or were not asked, (reason, pairs), most frequent first."""
    reasons: Counter[str] = Counter()
    async with sessionmaker() as session:
        offset = 0
        while True:
            page, total = await extractions.list_extractions(
                session,
                settings,
                project,
                _PAGE,
                offset,
                run_id=run.id,
                status=ExtractionStatus.FAILED,
            )
            reasons.update(item.error or "no reason was recorded" for item in page)
            offset += _PAGE
            if offset >= total or not page:
                break
    if run.counts.cancelled:
        reasons[run.error or "the run was stopped before they were asked"] += run.counts.cancelled
    return reasons.most_common()


async def write_export(
    sessionmaker: async_sessionmaker[AsyncSession],
    project: Project,
    output: Path,
    format: ExportFormat,
    layout: ExportLayout,
) -> Path:
    """The project's export, written next to `output` and moved over it when complete."""
    async with sessionmaker() as session:
        codebook = await exports.export_codebook(session, project.id)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        if format is ExportFormat.XLSX:
            await exports.write_workbook(sessionmaker, project.id, codebook, partial)
        else:
            with partial.open("wb") as handle:
                async for chunk in exports.stream_table(
                    sessionmaker, project.id, codebook, format, layout
                ):
                    handle.write(chunk)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output


# ---------------------------------------------------------------------------------------------
# The whole command


@contextlib.asynccontextmanager
async def _embedded(settings: Settings) -> AsyncIterator[JobContext]:
    """The pieces the API's lifespan builds, for this process; the runner is not started."""
    engine = create_engine(settings.database_url)
    llm = ChatModelFactory(settings)
    queue = EmbeddedQueue()
    ctx = JobContext(
        settings=settings,
        sessionmaker=create_sessionmaker(engine),
        storage=LocalStorage(settings.storage_dir),
        llm=llm,
        queue=queue,
        worker_id=f"extract-{uuid.uuid4().hex[:12]}",
    )
    try:
        yield ctx
    finally:
        await queue.stop()
        await llm.aclose()
        await engine.dispose()


async def _interrupted(ctx: JobContext, project: Project, run_id: uuid.UUID | None) -> None:
    """Ctrl-C: no new call starts; calls in flight get the shutdown grace to be stored."""
    if run_id is not None:
        async with session_scope(ctx.sessionmaker) as session:
            run = await runs.get_run(session, project, run_id)
            if run.status in ACTIVE_RUN_STATUSES:
                await runs.cancel_run(session, ctx.queue, run)
    await stop_work(ctx, grace=ctx.settings.worker_shutdown_grace_seconds)


async def run_extract(
    settings: Settings, request: ExtractRequest, reporter: Reporter
) -> ExtractResult:
    """Everything `quarry extract` does after its arguments were checked (module docstring).

    A cancellation (Ctrl-C) ends it early with `interrupted` set, once the calls in flight
    are stored. A run the runs service refuses (no LLM configured, a price a budget needs, no
    readable document) sets `refused`; other `QuarryError`s (a file Quarry cannot take)
    propagate."""
    result = ExtractResult()
    async with _embedded(settings) as ctx:
        sessionmaker = ctx.sessionmaker
        assert isinstance(ctx.queue, EmbeddedQueue)
        project = await prepare_project(ctx, request)
        await ctx.queue.start(ctx)
        run_id: uuid.UUID | None = None
        try:
            reporter.stage(f"Reading {len(request.documents)} documents")
            await upload_documents(sessionmaker, ctx.storage, ctx.queue, project, request.documents)
            result.unreadable = await wait_for_documents(sessionmaker, project)
            data = RunCreate(budget_usd=request.budget_usd)
            try:
                if request.dry_run:
                    async with sessionmaker() as session:
                        result.estimate = await runs.estimate_run(session, settings, project, data)
                    return result
                async with session_scope(sessionmaker) as session:
                    user = await _local_user(session, settings)
                    run = await runs.create_run(
                        session, settings, ctx.llm, ctx.queue, project, user, data
                    )
                    run_id = run.id
            except QuarryError as exc:
                # Refused (no LLM configured, no document readable…): said with what was read.
                result.refused = exc.detail
                return result
            reporter.stage("Extracting")
            result.run = await follow_run(sessionmaker, settings, project, run_id, reporter)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            result.interrupted = True
            reporter.stage("Ctrl-C: no new call starts; storing the answers in flight…")
            await _interrupted(ctx, project, run_id)
            if run_id is not None:
                result.run = await _run_out(sessionmaker, settings, project, run_id)
            return result
        result.failures = await failure_reasons(sessionmaker, settings, project, result.run)
        reporter.stage(f"Writing {request.output}")
        result.written = await write_export(
            sessionmaker, project, request.output, request.format, request.layout
        )
    return result
