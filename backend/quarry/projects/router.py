from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.jobs import StorageDep
from quarry.pagination import Page, PageDep
from quarry.projects import service
from quarry.projects.deps import AccessDep, ProjectEdit, ProjectManage, ProjectRead
from quarry.projects.schemas import REVIEW_SETTINGS, ProjectCreate, ProjectOut, ProjectUpdate
from quarry.security.audit import AuditAction, AuditDep

router = APIRouter(prefix="/projects", tags=["projects"])


def _jsonable(value: object) -> object:
    return str(value) if isinstance(value, uuid.UUID) else value


@router.get("", response_model=Page[ProjectOut])
async def list_projects(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[ProjectOut]:
    items, total = await service.list_projects(session, user, page.limit, page.offset)
    return Page(
        items=[ProjectOut.of(p, role) for p, role in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("", response_model=ProjectOut, status_code=status.HTTP_201_CREATED)
async def create_project(session: SessionDep, user: CurrentUser, data: ProjectCreate) -> ProjectOut:
    return ProjectOut.of(await service.create_project(session, user, data), "owner")


@router.get("/{project_id}", response_model=ProjectOut)
async def read_project(project: ProjectRead, access: AccessDep) -> ProjectOut:
    return ProjectOut.of(project, access.role)


@router.patch("/{project_id}", response_model=ProjectOut)
async def update_project(
    session: SessionDep,
    project: ProjectEdit,
    access: AccessDep,
    audit: AuditDep,
    data: ProjectUpdate,
) -> ProjectOut:
    """Change the project's settings. Its review settings (review_mode, review_blind,
    adjudicator_id) need the owner role; the rest the editor role."""
    updated = await service.update_project(session, project, data, access.role)
    changed = sorted(REVIEW_SETTINGS & data.model_fields_set)
    if changed:
        await audit.record(
            AuditAction.REVIEW_SETTINGS_CHANGED,
            "project",
            project.id,
            **{field: _jsonable(getattr(updated, field)) for field in changed},
        )
    return ProjectOut.of(updated, access.role)


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_project(
    session: SessionDep, storage: StorageDep, project: ProjectManage, audit: AuditDep
) -> None:
    """Delete the project, its codebook, documents, runs and results."""
    await service.delete_project(session, storage, project)
    await audit.record(AuditAction.PROJECT_DELETED, "project", project.id, name=project.name)
