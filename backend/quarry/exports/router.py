from __future__ import annotations

import asyncio
import re
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from quarry.db import SessionDep
from quarry.exports import service
from quarry.exports.bridge import pull_from_loop, stream_from_thread
from quarry.exports.csv_writer import iter_long_csv, iter_wide_csv
from quarry.exports.json_writer import iter_long_json, iter_wide_json
from quarry.exports.xlsx_writer import write_xlsx
from quarry.projects.deps import ProjectDep
from quarry.security.audit import AuditAction, AuditDep

router = APIRouter(prefix="/projects/{project_id}", tags=["export"])

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ExportFormat(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"
    JSON = "json"


class ExportLayout(StrEnum):
    WIDE = "wide"
    LONG = "long"


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
    project: ProjectDep,
    background: BackgroundTasks,
    audit: AuditDep,
    format: Annotated[ExportFormat, Query(description="csv, xlsx or json")] = ExportFormat.CSV,
    layout: Annotated[
        ExportLayout, Query(description="wide: a row per document; long: a row per value")
    ] = ExportLayout.WIDE,
) -> StreamingResponse | FileResponse:
    """Download the results: reviewed values where reviewed, else the latest extraction.

    xlsx always holds both layouts (sheets Results, Details) and the Codebook.
    """
    variables = await service.export_variables(session, project.id)
    # xlsx holds both layouts whatever `layout` says.
    shape = "wide+long" if format is ExportFormat.XLSX else layout.value
    await audit.record(
        AuditAction.EXPORTED, "project", project.id, format=format.value, layout=shape
    )
    sessionmaker = request.app.state.sessionmaker
    loop = asyncio.get_running_loop()
    project_id = project.id

    if format is ExportFormat.XLSX:
        handle = tempfile.NamedTemporaryFile(prefix="quarry-export-", suffix=".xlsx", delete=False)  # noqa: SIM115
        handle.close()
        path = Path(handle.name)
        await loop.run_in_executor(
            None,
            lambda: write_xlsx(
                path,
                variables,
                pull_from_loop(service.wide_rows(sessionmaker, project_id), loop),
                pull_from_loop(service.long_rows(sessionmaker, project_id), loop),
            ),
        )
        background.add_task(path.unlink, missing_ok=True)
        return FileResponse(
            path,
            media_type=XLSX_TYPE,
            filename=_download_name(project.name, "results", "xlsx"),
            background=background,
        )

    def produce():  # type: ignore[no-untyped-def]
        if layout is ExportLayout.WIDE:
            rows = pull_from_loop(service.wide_rows(sessionmaker, project_id), loop)
            return (iter_wide_csv if format is ExportFormat.CSV else iter_wide_json)(
                variables, rows
            )
        long = pull_from_loop(service.long_rows(sessionmaker, project_id), loop)
        return (iter_long_csv if format is ExportFormat.CSV else iter_long_json)(long)

    media = "text/csv; charset=utf-8" if format is ExportFormat.CSV else "application/json"
    name = _download_name(project.name, layout.value, format.value)
    return StreamingResponse(
        stream_from_thread(produce),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
