from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

from quarry.db import SessionDep
from quarry.exports import service
from quarry.exports.csv_writer import iter_table_csv
from quarry.exports.json_writer import iter_table_json
from quarry.exports.schemas import ExportFormat, ExportLayout
from quarry.exports.table import EvaluationTable
from quarry.models import Project
from quarry.projects.deps import ProjectRead
from quarry.reflists import casework
from quarry.reviewing import figures
from quarry.reviewing.deps import ReaderLens
from quarry.reviewing.verdicts import Lens
from quarry.security.audit import AuditAction, AuditDep

router = APIRouter(prefix="/projects/{project_id}", tags=["export"])

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class _ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator however the response ends.

    When a send fails because the client went away (ASGI spec 2.4: Starlette raises
    ClientDisconnect), Starlette leaves the iterator suspended, and an export's writer thread
    would wait on it, holding a database connection, until the garbage collector came by.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def _variable_names(codebook: service.Codebook) -> list[str]:
    return [v.name for v in codebook.variables if v.match_of is None]


async def _case_sheets(
    session: AsyncSession, project: Project, codebook: service.Codebook, lens: Lens
) -> tuple[EvaluationTable, ...]:
    work = await casework.casework(session, project, lens)
    return casework.cases_table(work, _variable_names(codebook)), casework.findings_table(work)


def _download_name(project_name: str, layout: str, extension: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", project_name).strip("-").lower()[:60] or "quarry"
    return f"{slug}-{layout}.{extension}"


@router.get(
    "/export",
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {
            "content": {"text/csv": {}, "application/json": {}, XLSX_TYPE: {}},
            "description": "The export file",
        }
    },
)
async def export(
    request: Request,
    session: SessionDep,
    project: ProjectRead,
    lens: ReaderLens,
    background: BackgroundTasks,
    audit: AuditDep,
    format: Annotated[ExportFormat, Query(description="csv, xlsx or json")] = ExportFormat.CSV,
    layout: Annotated[
        ExportLayout,
        Query(
            description="wide: a row per document; long: a row per value; cases: a row per "
            "case (documents grouped by the project's case key)"
        ),
    ] = ExportLayout.WIDE,
    flags: Annotated[
        bool,
        Query(
            description=(
                "wide CSV/JSON: follow each variable's column with `<name>__flag`, the cell's "
                "flags by name (the long layout always has a `flags` column; xlsx colours them)"
            )
        ),
    ] = False,
) -> StreamingResponse | FileResponse:
    """Download the results: reviewed values where reviewed, else the latest extraction.

    A cell's reviewed value is its adjudication, else its two dual reviewers' agreed verdict,
    else its newest single review. In dual review, an export made by a reviewer holds, in a
    cell not yet reviewed by both its reviewers, their own verdict (and in blind review, until
    they have reviewed it, not the model's value either). The same goes for the cases layout
    and the Cases and Findings sheets: they are built from what the reader may see of each
    cell (GET …/cases).

    xlsx always holds both layouts (sheets Results, Details) and the Codebook, for a project
    with a case key the sheets Cases and Findings, and for one with dual review the sheet
    Agreement (the figures of GET …/agreement).
    """
    codebook = await service.export_codebook(session, project.id)
    # xlsx holds both layouts whatever `layout` says.
    shape = "wide+long" if format is ExportFormat.XLSX else layout.value
    await audit.record(
        AuditAction.EXPORTED, "project", project.id, format=format.value, layout=shape
    )
    # The rows are read in sessions of the export's own: the request's session ends before a
    # streamed body does.
    sessionmaker = request.app.state.sessionmaker

    if format is ExportFormat.XLSX:
        handle = tempfile.NamedTemporaryFile(prefix="quarry-export-", suffix=".xlsx", delete=False)  # noqa: SIM115
        handle.close()
        path = Path(handle.name)
        try:
            extra = await _case_sheets(session, project, codebook, lens) if project.case_key else ()
            if await figures.has_dual_reviews(session, project):
                agreement = await figures.agreement(session, project)
                extra = (*extra, figures.agreement_table(agreement))
            await service.write_workbook(sessionmaker, project.id, codebook, path, extra, lens)
        except BaseException:
            # Synchronously, so that a cancelled request cannot skip it; it is one unlink.
            path.unlink(missing_ok=True)  # noqa: ASYNC240
            raise
        background.add_task(path.unlink, missing_ok=True)
        return FileResponse(
            path,
            media_type=XLSX_TYPE,
            filename=_download_name(project.name, "results", "xlsx"),
            background=background,
        )

    media = "text/csv; charset=utf-8" if format is ExportFormat.CSV else "application/json"
    name = _download_name(project.name, layout.value, format.value)
    if layout is ExportLayout.CASES:
        work = await casework.casework(session, project, lens)
        table = casework.cases_table(work, _variable_names(codebook))
        body = iter_table_csv(table) if format is ExportFormat.CSV else iter_table_json(table)
        return StreamingResponse(
            (chunk.encode() for chunk in body),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return _ClosingStreamingResponse(
        service.stream_table(sessionmaker, project.id, codebook, format, layout, flags, lens),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
