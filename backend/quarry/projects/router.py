from __future__ import annotations

from fastapi import APIRouter, status

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.jobs import StorageDep
from quarry.pagination import Page, PageDep
from quarry.projects import service
from quarry.projects.deps import AccessDep, ProjectEdit, ProjectManage, ProjectRead
from quarry.projects.schemas import ProjectCreate, ProjectOut, ProjectUpdate
from quarry.security.audit import AuditAction, AuditDep

router = APIRouter(prefix="/projects", tags=["projects"])


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
    session: SessionDep, project: ProjectEdit, access: AccessDep, data: ProjectUpdate
) -> ProjectOut:
    return ProjectOut.of(await service.update_project(session, project, data), access.role)


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_project(
    session: SessionDep, storage: StorageDep, project: ProjectManage, audit: AuditDep
) -> None:
    """Delete the project, its codebook, documents, runs and results."""
    await service.delete_project(session, storage, project)
    await audit.record(AuditAction.PROJECT_DELETED, "project", project.id, name=project.name)
