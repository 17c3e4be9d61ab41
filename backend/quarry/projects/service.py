"""Projects: created by a user (their owner), shared with members in roles (`roles.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.db import after_commit
from quarry.documents import repository as documents_repository
from quarry.documents.storage import LocalStorage
from quarry.errors import BadRequest, Forbidden, NotFound
from quarry.models import Project, User
from quarry.projects import repository
from quarry.projects.roles import Permission, Role, allows, refusal
from quarry.projects.schemas import REVIEW_SETTINGS, ProjectCreate, ProjectUpdate
from quarry.runs.lifecycle import forget_project
from quarry.variables.repository import list_variables


async def get_project_access(
    session: AsyncSession, project_id: uuid.UUID, user: User
) -> tuple[Project, Role]:
    """The project and the user's role in it; a project they are not a member of is
    indistinguishable from none (404)."""
    found = await repository.get_project_role(session, project_id, user.id)
    if found is None:
        raise NotFound("No such project.")
    project, role = found
    return project, Role(role)


def check_permission(role: Role, permission: Permission) -> None:
    """403 with a sentence naming the role needed, unless `role` holds `permission`."""
    if not allows(role, permission):
        raise Forbidden(refusal(role, permission))


async def create_project(session: AsyncSession, user: User, data: ProjectCreate) -> Project:
    project = Project(owner_id=user.id, **data.model_dump())
    session.add(project)
    await session.flush()
    return project


async def list_projects(
    session: AsyncSession, user: User, limit: int, offset: int
) -> tuple[Sequence[tuple[Project, str]], int]:
    return await repository.list_projects(session, user.id, limit, offset)


_NOT_NULLABLE = frozenset({"name", "description", "group_size", "review_mode", "review_blind"})


async def update_project(
    session: AsyncSession, project: Project, data: ProjectUpdate, role: Role = Role.OWNER
) -> Project:
    """Change the project's settings; its review settings (REVIEW_SETTINGS) only an owner."""
    changes = data.model_dump(exclude_unset=True)
    if REVIEW_SETTINGS & changes.keys() and not allows(role, Permission.MANAGE):
        article = "an" if role is Role.EDITOR else "a"
        raise Forbidden(
            "Changing how the project is reviewed (review_mode, review_blind, adjudicator_id) "
            f"needs the owner role in this project; you are {article} {role.value}."
        )
    for field, value in changes.items():
        if value is None and field in _NOT_NULLABLE:
            continue  # not nullable: null means "leave as is"
        if field == "adjudicator_id" and value is not None:
            found = await repository.get_project_role(session, project.id, value)
            if found is None or not allows(Role(found[1]), Permission.REVIEW):
                raise BadRequest(
                    "The adjudicator must be a member of the project who may review (an "
                    "owner, editor or reviewer)."
                )
        if field == "case_key" and value is not None:
            names = {v.name for v in await list_variables(session, project.id)}
            if value["variable"] not in names:
                raise BadRequest(
                    f"The case key names no variable of the project: '{value['variable']}'."
                )
        setattr(project, field, value)
    await session.flush()
    await session.refresh(project)
    return project


async def delete_project(session: AsyncSession, storage: LocalStorage, project: Project) -> None:
    """Delete the project with everything in it, and the files no other project shares."""
    keys = await documents_repository.storage_keys(session, project.id)
    # Task rows have no foreign keys (runs/lifecycle.py): they go first.
    await forget_project(session, project.id)
    await session.delete(project)
    await session.flush()
    orphans = [
        key for key in keys if await documents_repository.count_blob_users(session, key) == 0
    ]
    if orphans:
        after_commit(session, lambda: storage.delete_many(orphans))
