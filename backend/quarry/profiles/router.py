from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from quarry.db import SessionDep
from quarry.pagination import Page
from quarry.profiles import service
from quarry.profiles.schemas import ProfileCreate, ProfileOut, ProfileUpdate
from quarry.projects.deps import ProjectEdit, ProjectRead
from quarry.security.audit import AuditAction, AuditDep
from quarry.settings import SettingsDep

router = APIRouter(prefix="/projects/{project_id}/profiles", tags=["profiles"])


@router.get("", response_model=Page[ProfileOut])
async def list_profiles(session: SessionDep, project: ProjectRead) -> Page[ProfileOut]:
    """The project's model profiles, by name (a project has a few: one page)."""
    items = [service.to_out(p) for p in await service.list_profiles(session, project)]
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post("", response_model=ProfileOut, status_code=status.HTTP_201_CREATED)
async def create_profile(
    session: SessionDep, project: ProjectEdit, data: ProfileCreate, settings: SettingsDep
) -> ProfileOut:
    return service.to_out(await service.create_profile(session, project, data, settings))


@router.get("/{profile_id}", response_model=ProfileOut)
async def read_profile(
    session: SessionDep, project: ProjectRead, profile_id: uuid.UUID
) -> ProfileOut:
    return service.to_out(await service.get_profile(session, project, profile_id))


@router.patch("/{profile_id}", response_model=ProfileOut)
async def update_profile(
    session: SessionDep,
    project: ProjectEdit,
    profile_id: uuid.UUID,
    data: ProfileUpdate,
    settings: SettingsDep,
) -> ProfileOut:
    profile = await service.get_profile(session, project, profile_id)
    return service.to_out(await service.update_profile(session, profile, data, settings))


@router.delete("/{profile_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_profile(
    session: SessionDep, project: ProjectEdit, profile_id: uuid.UUID, audit: AuditDep
) -> None:
    profile = await service.get_profile(session, project, profile_id)
    await service.delete_profile(session, profile)
    await audit.record(AuditAction.PROFILE_DELETED, "model_profile", profile.id, name=profile.name)
