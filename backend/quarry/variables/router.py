from __future__ import annotations

import asyncio
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from quarry.db import SessionDep
from quarry.errors import ErrorOut, PayloadTooLarge
from quarry.pagination import Page
from quarry.projects.deps import ProjectEdit, ProjectRead
from quarry.security.audit import AuditAction, AuditDep
from quarry.variables import codebook as codebook_service
from quarry.variables import service
from quarry.variables.codebook_files import (
    MAX_CODEBOOK_BYTES,
    MEDIA_TYPES,
    CodebookFormat,
    format_from_media_type,
    sniff_format,
)
from quarry.variables.prompts import DOCUMENT_PLACEHOLDER, SYSTEM_PROMPT
from quarry.variables.schemas import (
    CodebookImportOut,
    InvalidCodebookOut,
    PromptOut,
    PromptVersionOut,
    PromptVersionRunOut,
    VariableCreate,
    VariableOut,
    VariableUpdate,
)

router = APIRouter(prefix="/projects/{project_id}/variables", tags=["variables"])


@router.get("", response_model=Page[VariableOut])
async def list_variables(session: SessionDep, project: ProjectRead) -> Page[VariableOut]:
    """The whole codebook, in order (codebooks are small, so it is one page)."""
    items = await service.to_out(session, await service.list_variables(session, project))
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post("", response_model=VariableOut, status_code=status.HTTP_201_CREATED)
async def create_variable(
    session: SessionDep, project: ProjectEdit, data: VariableCreate
) -> VariableOut:
    variable = await service.create_variable(session, project, data)
    return (await service.to_out(session, [variable]))[0]


@router.get("/{variable_id}", response_model=VariableOut)
async def read_variable(
    session: SessionDep, project: ProjectRead, variable_id: uuid.UUID
) -> VariableOut:
    variable = await service.get_variable(session, project, variable_id)
    return (await service.to_out(session, [variable]))[0]


@router.patch("/{variable_id}", response_model=VariableOut)
async def update_variable(
    session: SessionDep, project: ProjectEdit, variable_id: uuid.UUID, data: VariableUpdate
) -> VariableOut:
    variable = await service.get_variable(session, project, variable_id)
    variable = await service.update_variable(session, variable, data)
    return (await service.to_out(session, [variable]))[0]


@router.delete("/{variable_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_variable(
    session: SessionDep, project: ProjectEdit, variable_id: uuid.UUID, audit: AuditDep
) -> None:
    variable = await service.get_variable(session, project, variable_id)
    await service.delete_variable(session, variable)
    await audit.record(AuditAction.VARIABLE_DELETED, "variable", variable.id, name=variable.name)


@router.get("/{variable_id}/prompt", response_model=PromptOut)
async def read_prompt(
    session: SessionDep, project: ProjectRead, variable_id: uuid.UUID
) -> PromptOut:
    """The rendered prompt the model receives for this variable (current version)."""
    variable = await service.get_variable(session, project, variable_id)
    version = await service.current_prompt(session, variable)
    return PromptOut(
        variable_id=variable.id,
        version=version.version,
        spec_hash=version.spec_hash,
        system=SYSTEM_PROMPT,
        document_placeholder=DOCUMENT_PLACEHOLDER,
        variable_prompt=version.prompt,
        created_at=version.created_at,
    )


@router.get("/{variable_id}/prompt-versions", response_model=Page[PromptVersionOut])
async def list_prompt_versions(
    session: SessionDep, project: ProjectRead, variable_id: uuid.UUID
) -> Page[PromptVersionOut]:
    """Every prompt the variable has had, oldest first, with its text and the runs that used
    it. Going back to an earlier text makes that version current again (no new one)."""
    variable = await service.get_variable(session, project, variable_id)
    versions, current, runs = await service.prompt_history(session, variable)
    items = [
        PromptVersionOut(
            id=v.id,
            version=v.version,
            spec_hash=v.spec_hash,
            current=current is not None and v.id == current.id,
            spec=v.spec,
            prompt=v.prompt,
            created_at=v.created_at,
            runs=[
                PromptVersionRunOut(id=r.id, status=r.status, created_at=r.created_at)
                for r in runs.get(v.id, [])
            ],
        )
        for v in versions
    ]
    return Page(items=items, total=len(items), limit=len(items), offset=0)


codebook_router = APIRouter(prefix="/projects/{project_id}/codebook", tags=["variables"])

_CODEBOOK_CONTENT: dict[str, Any] = {
    "application/yaml": {"schema": {"type": "object"}},
    "application/json": {"schema": {"type": "object"}},
    "text/csv": {"schema": {"type": "string"}},
    MEDIA_TYPES[CodebookFormat.XLSX]: {"schema": {"type": "string", "format": "binary"}},
}
_CODEBOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The codebook file (README: Codebook files). Its format is the `format` "
        "parameter, else the Content-Type, else guessed from the bytes.",
        "content": _CODEBOOK_CONTENT,
    }
}
_FORMAT_QUERY = Query(description="yaml (the default), json, csv or xlsx")


def _download_name(project_name: str, file_format: CodebookFormat) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", project_name).strip("-").lower()[:60] or "quarry"
    return f"{slug}-codebook.{file_format.value}"


@codebook_router.get(
    "",
    response_class=Response,
    responses={200: {"content": _CODEBOOK_CONTENT, "description": "The codebook file"}},
)
async def export_codebook(
    session: SessionDep,
    project: ProjectRead,
    format: Annotated[CodebookFormat, _FORMAT_QUERY] = CodebookFormat.YAML,
) -> Response:
    """Download the project's codebook (its variables and settings) as a file that
    `PUT …/codebook` imports, here or into another project."""
    codebook = await codebook_service.export_codebook(session, project)
    content = await asyncio.to_thread(codebook_service.write_codebook, codebook, format)
    name = _download_name(project.name, format)
    return Response(
        content,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _receive_file(request: Request) -> bytes:
    """The request body, refused (413) as soon as it passes the limit."""
    limit = MAX_CODEBOOK_BYTES
    declared = request.headers.get("content-length", "")
    too_large = PayloadTooLarge(f"The codebook file is larger than {limit // (1024 * 1024)} MB.")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


@codebook_router.put(
    "",
    response_model=CodebookImportOut,
    openapi_extra=_CODEBOOK_BODY,
    responses={
        400: {
            "model": InvalidCodebookOut,
            "description": "The file is not a valid codebook: `problems` lists every problem, "
            "each with its variable and row; nothing was changed",
        },
        413: {"model": ErrorOut, "description": "The file is larger than 2 MB"},
    },
)
async def import_codebook(
    request: Request,
    session: SessionDep,
    project: ProjectEdit,
    audit: AuditDep,
    format: Annotated[CodebookFormat | None, _FORMAT_QUERY] = None,
    delete_missing: Annotated[
        bool,
        Query(
            description="Delete the variables the file does not name (with their results); "
            "by default they are kept, after the file's variables"
        ),
    ] = False,
) -> CodebookImportOut:
    """Import a codebook file, all or nothing: every problem is listed and nothing changes,
    or the whole file is applied. Variables are matched by name; an unchanged one keeps its
    prompt version."""
    data = await _receive_file(request)
    file_format = (
        format or format_from_media_type(request.headers.get("content-type")) or sniff_format(data)
    )
    codebook = await asyncio.to_thread(codebook_service.read_codebook, data, file_format)
    changes = await codebook_service.apply_codebook(
        session, project, codebook, delete_missing=delete_missing
    )
    for variable_id, name in zip(changes.deleted_ids, changes.deleted, strict=True):
        await audit.record(
            AuditAction.VARIABLE_DELETED, "variable", variable_id, name=name, via="codebook"
        )
    variables = await service.to_out(session, await service.list_variables(session, project))
    return CodebookImportOut(
        created=changes.created,
        updated=changes.updated,
        unchanged=changes.unchanged,
        kept=changes.kept,
        deleted=changes.deleted,
        settings=changes.settings,
        variables=variables,
    )
