from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from quarry.db import SessionDep
from quarry.pagination import Page
from quarry.projects.deps import ProjectDep
from quarry.security.audit import AuditAction, AuditDep
from quarry.variables import service
from quarry.variables.prompts import DOCUMENT_PLACEHOLDER, SYSTEM_PROMPT
from quarry.variables.schemas import PromptOut, VariableCreate, VariableOut, VariableUpdate

router = APIRouter(prefix="/projects/{project_id}/variables", tags=["variables"])


@router.get("", response_model=Page[VariableOut])
async def list_variables(session: SessionDep, project: ProjectDep) -> Page[VariableOut]:
    """The whole codebook, in order (codebooks are small, so it is one page)."""
    items = await service.to_out(session, await service.list_variables(session, project))
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post("", response_model=VariableOut, status_code=status.HTTP_201_CREATED)
async def create_variable(
    session: SessionDep, project: ProjectDep, data: VariableCreate
) -> VariableOut:
    variable = await service.create_variable(session, project, data)
    return (await service.to_out(session, [variable]))[0]


@router.get("/{variable_id}", response_model=VariableOut)
async def read_variable(
    session: SessionDep, project: ProjectDep, variable_id: uuid.UUID
) -> VariableOut:
    variable = await service.get_variable(session, project, variable_id)
    return (await service.to_out(session, [variable]))[0]


@router.patch("/{variable_id}", response_model=VariableOut)
async def update_variable(
    session: SessionDep, project: ProjectDep, variable_id: uuid.UUID, data: VariableUpdate
) -> VariableOut:
    variable = await service.get_variable(session, project, variable_id)
    variable = await service.update_variable(session, variable, data)
    return (await service.to_out(session, [variable]))[0]


@router.delete("/{variable_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_variable(
    session: SessionDep, project: ProjectDep, variable_id: uuid.UUID, audit: AuditDep
) -> None:
    variable = await service.get_variable(session, project, variable_id)
    await service.delete_variable(session, variable)
    await audit.record(AuditAction.VARIABLE_DELETED, "variable", variable.id, name=variable.name)


@router.get("/{variable_id}/prompt", response_model=PromptOut)
async def read_prompt(
    session: SessionDep, project: ProjectDep, variable_id: uuid.UUID
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
